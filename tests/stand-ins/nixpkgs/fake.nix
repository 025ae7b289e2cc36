# Helpers of the nixpkgs stand-in: fake derivations that refuse to evaluate as nixpkgs' check-meta
# does, strict argument checks, call records.
#
# A fake derivation is an attribute set Nix itself treats as a derivation (type = "derivation",
# name, outPath, drvPath well-formed store paths), so `nix flake check --no-build`, `nix eval` and
# string interpolation ("${pkg}/bin/x") work on it, but nothing can ever be built from it.
# Its store hash is derived from everything it was made from, including the outPaths of its
# dependencies, so forcing its outPath forces theirs: a refused dependency refuses the whole
# image, as in nixpkgs.
#
# The refusals and their messages follow pkgs/stdenv/generic/check-meta.nix (handleEvalIssue:
# "Package ‘<name>’ in <position> <reason>, refusing to evaluate."), with the reasons of the real
# checks: marked as broken (meta.broken, unless config.allowBroken), an unfree license (unless
# config.allowUnfree or config.allowUnfreePredicate admits the package), not available on the
# requested hostPlatform (meta.platforms), marked as insecure (meta.knownVulnerabilities, unless
# its name is in config.permittedInsecurePackages).
{ system, config }:
let
  # Nix's base-32 alphabet lacks e, o, u, t; hex digits only need e replaced.
  storeHash = seed: builtins.substring 0 32 (builtins.replaceStrings [ "e" ] [ "g" ] (builtins.hashString "sha256" seed));

  # Why check-meta would refuse a package with these facts, or null.
  refusal =
    {
      name,
      position,
      meta,
      platforms,
    }:
    let
      unfree = builtins.filter (l: !l.free) meta.license;
      admitted =
        (config.allowUnfree or false) || (config ? allowUnfreePredicate && config.allowUnfreePredicate { inherit name meta; });
      insecure = meta.knownVulnerabilities != [ ] && !(builtins.elem name (config.permittedInsecurePackages or [ ]));
      prefix = "Package ‘${name}’ in ${position}";
    in
    if meta.broken && !(config.allowBroken or false) then
      "${prefix} is marked as broken, refusing to evaluate."
    else if unfree != [ ] && !admitted then
      "${prefix} has an unfree license (‘${builtins.concatStringsSep "’, ‘" (map (l: l.shortName) unfree)}’), refusing to evaluate."
    else if !(builtins.elem system platforms) then
      "${prefix} is not available on the requested hostPlatform:\n  hostPlatform.system = \"${system}\"\n  package.meta.platforms = ${builtins.toJSON platforms}\n, refusing to evaluate."
    else if insecure then
      "${prefix} is marked as insecure, refusing to evaluate.\n\nKnown issues:\n${builtins.concatStringsSep "\n" (map (v: " - ${v}") meta.knownVulnerabilities)}"
    else
      null;
in
rec {
  # attrPath   where the package lives in the set ("python3Packages.torch-bin"), for records.
  # pname, version
  # position   the nixpkgs file that defines it (check-meta names it in refusals).
  # licenses   list of { shortName; free; }.
  # platforms, broken, knownVulnerabilities: meta as the package base records it.
  # deps       derivations whose outPaths are part of this one's identity (runtime closure).
  # passthru   extra attributes (cudaSupport, withPackages, ...).
  # seed       anything else that distinguishes this build (e.g. the recorded call).
  mkFake =
    {
      attrPath,
      pname,
      version ? "1.0",
      position ? "the stand-in",
      licenses ? [
        {
          shortName = "mit";
          free = true;
        }
      ],
      platforms ? [
        "x86_64-linux"
        "aarch64-linux"
      ],
      broken ? false,
      knownVulnerabilities ? [ ],
      deps ? [ ],
      passthru ? { },
      seed ? "",
      mainProgram ? pname,
    }:
    let
      name = "${pname}-${version}";
      meta = {
        license = licenses;
        unfree = builtins.any (l: !l.free) licenses;
        inherit
          platforms
          broken
          knownVulnerabilities
          mainProgram
          ;
      };
      refused = refusal {
        inherit name position meta platforms;
      };
      identity = builtins.toJSON {
        inherit
          system
          attrPath
          name
          seed
          ;
        # toJSON of a derivation is its outPath: forces the dependencies' own checks.
        deps = deps;
      };
      checked = value: if refused != null then throw refused else value;
      self =
        passthru
        // {
          type = "derivation";
          inherit
            name
            pname
            version
            system
            meta
            ;
          outPath = checked "/nix/store/${storeHash identity}-${name}";
          drvPath = checked "/nix/store/${storeHash "drv:${identity}"}-${name}.drv";
          outputs = [ "out" ];
          outputName = "out";
          out = self;
          standInAttrPath = attrPath;
          standInPosition = position;
          # What it was made from (the closure an image of it holds).
          standInRuntimeDeps = deps;
          # The nixpkgs config of the package set this came from (cudaSupport, allowUnfree, ...).
          standInNixpkgsConfig = config;
        };
    in
    self;

  # Real nixpkgs functions accept these argument names; anything else is a mistake here.
  checkArgs =
    fn: allowed: required: args:
    let
      unknown = builtins.filter (n: !(builtins.elem n allowed)) (builtins.attrNames args);
      missing = builtins.filter (n: !(args ? ${n})) required;
    in
    if !(builtins.isAttrs args) then
      throw "stand-in nixpkgs: ${fn} expects an attribute set of arguments"
    else if unknown != [ ] then
      throw "stand-in nixpkgs: unknown argument(s) ${builtins.toJSON unknown} to ${fn} (it takes ${builtins.toJSON allowed})"
    else if missing != [ ] then
      throw "stand-in nixpkgs: ${fn} is missing required argument(s) ${builtins.toJSON missing}"
    else
      args;

  # A JSON-friendly copy of call arguments: derivations become their attribute path (or name),
  # builder results { drv = attribute path; call = their own call }, functions a marker, so tests
  # can assert on them with `nix eval --json`.
  describe =
    value:
    if builtins.isAttrs value && (value.type or null) == "derivation" then
      (
        if value ? standInCall then
          {
            drv = value.standInAttrPath or value.name;
            call = value.standInCall;
          }
        else
          value.standInAttrPath or value.name
      )
    else if builtins.isAttrs value then
      builtins.mapAttrs (_: describe) value
    else if builtins.isList value then
      map describe value
    else if builtins.isFunction value then
      "<function>"
    else if builtins.isPath value then
      toString value
    else
      value;
}
