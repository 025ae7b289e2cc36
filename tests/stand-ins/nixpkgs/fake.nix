# Helpers of the nixpkgs stand-in: fake derivations, strict argument checks, call records.
#
# A fake derivation is an attribute set Nix itself treats as a derivation (type = "derivation",
# name, outPath, drvPath well-formed store paths), so `nix flake check --no-build`, `nix eval` and
# string interpolation ("${pkg}/bin/x") work on it, but nothing can ever be built from it.
# Its store hash is derived from everything it was made from, including the outPaths of its
# dependencies, so forcing its outPath forces theirs (that is how an unfree dependency refuses to
# evaluate, as nixpkgs' check-meta does).
{ system, config }:
let
  # Nix's base-32 alphabet lacks e, o, u, t; hex digits only need e replaced.
  storeHash = seed: builtins.substring 0 32 (builtins.replaceStrings [ "e" ] [ "g" ] (builtins.hashString "sha256" seed));

  unfreeRefusal =
    attrPath: license:
    throw "stand-in nixpkgs: refusing to evaluate '${attrPath}': its license (${license}) is unfree and config.allowUnfree is not set";
in
rec {
  allowUnfree = config.allowUnfree or false;

  # attrPath   where the package lives in the set ("python3Packages.torch-bin"), for messages.
  # pname, version
  # license    SPDX-like name; free = false marks it unfree.
  # deps       derivations whose outPaths are part of this one's identity (runtime closure).
  # passthru   extra attributes (cudaSupport, withPackages, ...).
  # seed       anything else that distinguishes this build (e.g. the recorded call).
  mkFake =
    {
      attrPath,
      pname,
      version ? "1.0",
      license ? "mit",
      free ? true,
      deps ? [ ],
      passthru ? { },
      seed ? "",
      mainProgram ? pname,
    }:
    let
      name = "${pname}-${version}";
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
      refused = !free && !allowUnfree;
      outPath = if refused then unfreeRefusal attrPath license else "/nix/store/${storeHash identity}-${name}";
      drvPath =
        if refused then unfreeRefusal attrPath license else "/nix/store/${storeHash "drv:${identity}"}-${name}.drv";
      self =
        passthru
        // {
          type = "derivation";
          inherit
            name
            pname
            version
            system
            outPath
            drvPath
            ;
          outputs = [ "out" ];
          outputName = "out";
          out = self;
          meta = {
            license = {
              shortName = license;
              inherit free;
            };
            unfree = !free;
            inherit mainProgram;
          };
          standInAttrPath = attrPath;
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
