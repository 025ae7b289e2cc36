# The stand-in package set for one system and config (what `import nixpkgs { ... }` returns).
#
# Packages come from catalog.nix; builders (dockerTools.buildLayeredImage, mkShell,
# python3.withPackages, runCommand, fakeNss.override) check their arguments against the names the
# real functions take, and record the call in `standInCall = { fn; args; }`.
{ system, config }:
let
  lib = import ./lib.nix;
  fake = import ./fake.nix { inherit system config; };
  inherit (fake) mkFake checkArgs describe;
  catalog = import ./catalog.nix;

  cudaSupport = config.cudaSupport or false;

  # A call record that keeps derivations as their attribute paths (JSON-friendly).
  record = fn: args: {
    inherit fn;
    args = describe args;
  };

  # Seed of a builder result: its arguments minus functions and derivations (those go in deps).
  seedOf = args: builtins.toJSON (describe args);

  cudaPackages = builtins.mapAttrs (
    name: _:
    mkFake {
      attrPath = "cudaPackages.${name}";
      pname = name;
      version = "12.8";
      license = "CUDA EULA";
      free = false;
    }
  ) catalog.cuda;

  cudaDeps = [
    cudaPackages.cudatoolkit
    cudaPackages.cudnn
  ];

  mkPackage =
    setPath: lookup: name: spec:
    let
      cuda = spec.cuda or null;
      withCuda = cuda == "always" || (cuda == "config" && cudaSupport);
    in
    mkFake {
      attrPath = "${setPath}${name}";
      pname = name;
      version = spec.version or "1.0";
      license = spec.license or "mit";
      free = spec.free or true;
      deps = (if withCuda then cudaDeps else [ ]) ++ map lookup (spec.deps or [ ]);
      seed = if withCuda then "cuda ${builtins.toJSON (config.cudaCapabilities or [ ])}" else "";
      passthru =
        (if cuda != null then { cudaSupport = withCuda; } else { })
        // {
          standInProvides = spec.provides or [ (builtins.replaceStrings [ "-" ] [ "_" ] name) ];
        };
    };

  mkSet =
    setPath: specs:
    let
      self = builtins.mapAttrs (
        name: spec: if spec ? aliasOf then self.${spec.aliasOf} else mkPackage setPath (n: self.${n}) name spec
      ) specs;
    in
    self;

  python3Packages = mkSet "python3Packages." catalog.python;

  isPythonPackage = p: builtins.isAttrs p && lib.hasPrefix "python3Packages." (p.standInAttrPath or "");

  # python3.withPackages (ps: [ ... ]): one argument, a function of the package set returning a
  # list of python3Packages. Two packages installing one module collide, as in buildEnv.
  withPackages =
    f:
    let
      selected = if builtins.isFunction f then f python3Packages else throw "stand-in nixpkgs: python3.withPackages takes a function (ps: [ ... ]), got a ${builtins.typeOf f}";
      notPython = builtins.filter (p: !(isPythonPackage p)) selected;
      owners = builtins.foldl' (
        acc: p:
        builtins.foldl' (
          acc': module:
          if acc' ? ${module} && acc'.${module} != p.standInAttrPath then
            throw "stand-in nixpkgs: python3.withPackages: ${acc'.${module}} and ${p.standInAttrPath} both install the module '${module}' (buildEnv collision)"
          else
            acc' // { ${module} = p.standInAttrPath; }
        ) acc p.standInProvides
      ) { } selected;
      call = record "python3.withPackages" { packages = selected; };
    in
    if !(builtins.isList selected) then
      throw "stand-in nixpkgs: python3.withPackages: the function must return a list"
    else if notPython != [ ] then
      throw "stand-in nixpkgs: python3.withPackages: not python3Packages: ${builtins.toJSON (describe notPython)}"
    else
      builtins.seq owners (mkFake {
        attrPath = "python3.withPackages";
        pname = "python3";
        version = "3.13.9-env";
        license = "psfl";
        deps = [ python3 ] ++ selected;
        passthru = {
          standInCall = call;
        };
      });

  python3 = mkFake {
    attrPath = "python3";
    pname = "python3";
    version = "3.13.9";
    license = "psfl";
    mainProgram = "python3";
    passthru = {
      pkgs = python3Packages;
      inherit withPackages;
      pythonVersion = "3.13";
      sitePackages = "lib/python3.13/site-packages";
    };
  };

  top = mkSet "" catalog.top;

  hostPlatform = {
    inherit system;
    isLinux = true;
    parsed.cpu.name = builtins.head (builtins.split "-" system);
  };

  # Argument names of pkgs/build-support/docker/default.nix streamLayeredImage (26.05);
  # buildLayeredImage adds `compressor`.
  streamLayeredImageArgs = [
    "name"
    "tag"
    "fromImage"
    "contents"
    "config"
    "architecture"
    "created"
    "mtime"
    "uid"
    "gid"
    "uname"
    "gname"
    "maxLayers"
    "extraCommands"
    "fakeRootCommands"
    "enableFakechroot"
    "includeStorePaths"
    "includeNixDB"
    "passthru"
    "meta"
    "layeringPipeline"
    "debug"
  ];

  # Keys of the OCI image configuration ("config" object of the image-spec).
  ociConfigKeys = [
    "User"
    "ExposedPorts"
    "Env"
    "Entrypoint"
    "Cmd"
    "Volumes"
    "WorkingDir"
    "Labels"
    "StopSignal"
    "ArgsEscaped"
    "Healthcheck"
    "OnBuild"
    "Shell"
  ];

  checkImageArgs =
    fn: args:
    let
      imageConfig = checkArgs "${fn} { config }" ociConfigKeys [ ] (args.config or { });
      env = imageConfig.Env or [ ];
      badEnv = builtins.filter (e: !(builtins.isString e) || builtins.match "[A-Za-z_][A-Za-z0-9_]*=.*" e == null) env;
      contents = args.contents or [ ];
      badContents = builtins.filter (c: !(builtins.isAttrs c && (c.type or null) == "derivation")) (
        if builtins.isList contents then contents else [ contents ]
      );
    in
    if (args.created or "") == "now" then
      throw "stand-in nixpkgs: ${fn}: created = \"now\" makes the image unreproducible"
    else if badEnv != [ ] then
      throw "stand-in nixpkgs: ${fn}: config.Env entries must be \"NAME=value\" strings: ${builtins.toJSON badEnv}"
    else if badContents != [ ] then
      throw "stand-in nixpkgs: ${fn}: contents must be derivations"
    else if !(builtins.elem (args.compressor or "gz") [ "gz" "zstd" "none" ]) then
      throw "stand-in nixpkgs: ${fn}: compressor must be one of gz, zstd, none"
    else
      args;

  mkImage =
    fn: allowed: suffix: rawArgs:
    let
      args = checkImageArgs fn (checkArgs fn allowed [ "name" ] rawArgs);
      contents = args.contents or [ ];
    in
    mkFake {
      attrPath = fn;
      pname = baseNameOf args.name;
      version = suffix;
      deps = if builtins.isList contents then contents else [ contents ];
      seed = seedOf (builtins.removeAttrs args [ "passthru" "meta" ]);
      passthru = (args.passthru or { }) // {
        imageName = args.name;
        imageTag = args.tag or null;
        standInCall = record fn args;
      };
    };

  fakeNssWith =
    args:
    mkFake {
      attrPath = "fakeNss";
      pname = "fake-nss";
      deps = [ ];
      seed = builtins.toJSON args;
      passthru = {
        override = newArgs: fakeNssWith (args // checkArgs "fakeNss.override" [ "extraPasswdLines" "extraGroupLines" ] [ ] newArgs);
        standInCall = record "fakeNss" args;
      };
    };

  fakeNss = fakeNssWith {
    extraPasswdLines = [ ];
    extraGroupLines = [ ];
  };

  dockerTools = {
    buildLayeredImage = mkImage "dockerTools.buildLayeredImage" (streamLayeredImageArgs ++ [ "compressor" ]) "tar.gz";
    streamLayeredImage = mkImage "dockerTools.streamLayeredImage" streamLayeredImageArgs "stream";
    binSh = mkFake {
      attrPath = "dockerTools.binSh";
      pname = "bin-sh";
      deps = [ top.bashInteractive ];
    };
    usrBinEnv = mkFake {
      attrPath = "dockerTools.usrBinEnv";
      pname = "usr-bin-env";
      deps = [ top.coreutils ];
    };
    caCertificates = mkFake {
      attrPath = "dockerTools.caCertificates";
      pname = "ca-certificates";
      deps = [ top.cacert ];
    };
    inherit fakeNss;
  };

  # pkgs/build-support/mkshell: named arguments, and the rest passed to mkDerivation (only the
  # ones mlws may sensibly use are accepted here).
  mkShell =
    rawArgs:
    let
      args = checkArgs "mkShell" [
        "name"
        "packages"
        "inputsFrom"
        "buildInputs"
        "nativeBuildInputs"
        "propagatedBuildInputs"
        "propagatedNativeBuildInputs"
        "shellHook"
        "env"
        "passthru"
        "meta"
      ] [ ] rawArgs;
    in
    mkFake {
      attrPath = "mkShell";
      pname = args.name or "nix-shell";
      version = "shell";
      deps = (args.packages or [ ]) ++ (args.buildInputs or [ ]) ++ (args.nativeBuildInputs or [ ]);
      seed = seedOf (builtins.removeAttrs args [ "passthru" "meta" ]);
      passthru = (args.passthru or { }) // {
        standInCall = record "mkShell" args;
      };
    };

  # runCommand name env buildCommand (pkgs/build-support/trivial-builders).
  runCommand =
    name: env: buildCommand:
    if !(builtins.isString name) then
      throw "stand-in nixpkgs: runCommand: the name must be a string"
    else if !(builtins.isAttrs env) then
      throw "stand-in nixpkgs: runCommand ${name}: the second argument must be an attribute set"
    else if !(builtins.isString buildCommand) then
      throw "stand-in nixpkgs: runCommand ${name}: the build command must be a string"
    else
      mkFake {
        attrPath = "runCommand";
        pname = name;
        version = "run";
        deps = (env.nativeBuildInputs or [ ]) ++ (env.buildInputs or [ ]);
        seed = seedOf {
          env = builtins.removeAttrs env [ "passthru" "meta" ];
          inherit buildCommand;
        };
        passthru = (env.passthru or { }) // {
          standInCall = record "runCommand" { inherit name env buildCommand; };
        };
      };
in
top
// {
  inherit
    lib
    python3
    python3Packages
    cudaPackages
    dockerTools
    fakeNss
    mkShell
    runCommand
    ;
  python313 = python3;
  python313Packages = python3Packages;
  cudaPackages_12 = cudaPackages;
  rPackages = mkSet "rPackages." catalog.r;
  stdenv = {
    inherit hostPlatform;
    buildPlatform = hostPlatform;
  };
  inherit config;
}
