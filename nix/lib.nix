# nix/lib.nix: reads the generated modules/ and flavors/ folders and resolves one flavor.
#
# The folders are read with builtins.readDir, so a tool or flavor the generator adds is picked up
# without touching any hand-kept list. The shapes of the files are those of docs/architecture.md
# ("Generated Nix shapes").
#
# Arguments (an attribute set):
#   lib         nixpkgs' `lib` (uses: hasSuffix, removeSuffix, filterAttrs, unique, concatMap,
#               subtractLists).
#   modulesDir  path of the folder of generated tool modules (`modules/`): every `<tool>.nix` in it is
#               a function `{ pkgs }: { name, packages, pythonPackages, needs, env }`.
#   flavorsDir  path of the folder of generated flavor files (`flavors/`): every `<flavor>.nix` in it
#               is an attribute set `{ name, extends, imageName, description, systems, tools,
#               systemPackages, programsOnly, pythonPackages, rPackages, nixpkgsConfig,
#               unfreeLicenses, env, manifest }`.
#
# Returns an attribute set:
#   toolNames     sorted list of tool names (file stems of modules/*.nix).
#   flavors       attribute set flavor name -> flavor file contents (checked: `name` matches the file,
#                 every tool it lists has a module, `extends` names a flavor that exists).
#   flavorNames   sorted list of flavor names.
#   ancestors     flavor -> list of flavor names it extends, nearest first (["full" "minimal"]).
#   resolve       pkgs -> flavor -> { tools, systemPackages, pythonPackages, env }:
#                   tools           the flavor's tool modules applied to { pkgs } (checked: every
#                                   tool a module `needs` is in the flavor);
#                   systemPackages  de-duplicated list of derivations: the flavor's
#                                   `systemPackages pkgs`, then every tool's `packages`, then the
#                                   programs of each `programsOnly` package (nix/programs.nix),
#                                   then the wrapped R and its Jupyter kernelspec when the flavor
#                                   has `rPackages` (nix/r.nix; rstudio-server is then the wrapper
#                                   with those packages);
#                   pythonPackages  ps -> de-duplicated list: the flavor's pythonPackages, then every
#                                   tool's, for python3.withPackages;
#                   env             environment those packages need (JUPYTER_PATH for the R
#                                   kernel; { } without R), for the image and the dev shell alike.
#   flavorsFor    system -> list of flavor names whose `systems` include that system.
{
  lib,
  modulesDir,
  flavorsDir,
}:
let
  # File stems of the regular `*.nix` files of a folder (the manifests `*.manifest.json` and any
  # other file are ignored).
  nixFileStems =
    dir:
    let
      entries = lib.filterAttrs (
        name: type: type == "regular" && lib.hasSuffix ".nix" name
      ) (builtins.readDir dir);
    in
    map (lib.removeSuffix ".nix") (builtins.attrNames entries);

  toolNames = nixFileStems modulesDir;
  flavorNames = nixFileStems flavorsDir;

  moduleFunctions = builtins.listToAttrs (
    map (name: {
      inherit name;
      value = import (modulesDir + "/${name}.nix");
    }) toolNames
  );

  checkFlavor =
    fileName: flavor:
    let
      where = "flavors/${fileName}.nix";
      unknownTools = builtins.filter (tool: !(moduleFunctions ? ${tool})) flavor.tools;
    in
    if flavor.name != fileName then
      throw "mlws: ${where}: name is \"${flavor.name}\", expected \"${fileName}\" (the file name)"
    else if unknownTools != [ ] then
      throw "mlws: ${where}: tools: no modules/<tool>.nix for ${builtins.toJSON unknownTools}"
    else if flavor.extends != null && !(builtins.elem flavor.extends flavorNames) then
      throw "mlws: ${where}: extends \"${flavor.extends}\", but there is no flavors/${flavor.extends}.nix"
    else
      flavor;

  flavors = builtins.listToAttrs (
    map (name: {
      inherit name;
      value = checkFlavor name (import (flavorsDir + "/${name}.nix"));
    }) flavorNames
  );

  # Nearest parent first. The generator refuses cycles; the length guard keeps a hand-edited cycle
  # from looping forever.
  ancestors =
    flavor:
    let
      go =
        seen: current:
        if current.extends == null then
          seen
        else if builtins.elem current.extends seen || builtins.length seen > builtins.length flavorNames then
          throw "mlws: flavors/${flavor.name}.nix: `extends` forms a cycle through ${builtins.toJSON seen}"
        else
          go (seen ++ [ current.extends ]) flavors.${current.extends};
    in
    go [ ] flavor;

  resolve =
    pkgs: flavor:
    let
      tools = map (name: (moduleFunctions.${name} { inherit pkgs; })) flavor.tools;
      missingNeeds = lib.subtractLists flavor.tools (lib.concatMap (tool: tool.needs) tools);
      r = import ./r.nix {
        inherit pkgs;
        inherit (flavor) rPackages;
      };
      programsOf = import ./programs.nix pkgs;
    in
    if missingNeeds != [ ] then
      throw "mlws: flavors/${flavor.name}.nix: tools: missing ${builtins.toJSON missingNeeds}, needed by its tools"
    else
      {
        inherit tools;
        systemPackages = lib.unique (
          map r.swapPackage (flavor.systemPackages pkgs ++ lib.concatMap (tool: tool.packages) tools)
          ++ map programsOf (flavor.programsOnly pkgs)
          ++ r.packages
        );
        inherit (r) env;
        pythonPackages =
          ps: lib.unique (flavor.pythonPackages ps ++ lib.concatMap (tool: tool.pythonPackages ps) tools);
      };

  flavorsFor = system: builtins.filter (name: builtins.elem system flavors.${name}.systems) flavorNames;
in
{
  inherit
    toolNames
    flavorNames
    flavors
    ancestors
    resolve
    flavorsFor
    ;
}
