# The stand-in package set for one system and config (what `import nixpkgs { ... }` returns).
#
# Package names come from known-attributes.toml (the project's spec/known-attributes.toml, copied
# next to this file: a flake's source is copied to the store alone, so the stand-in cannot read
# ../../../spec itself), metadata from catalog.nix; the `infrastructure` names below are the
# builders and helpers nixpkgs has besides. Builders (dockerTools.buildLayeredImage, mkShell,
# python3.withPackages, runCommand, writeTextDir, fakeNss.override, rWrapper.override,
# rstudioServerWrapper.override) check their arguments against the names the real functions take,
# and record the call: `standInCall = { fn; args; }` (JSON-friendly: derivations
# as their attribute paths) and `standInArgs` (the arguments themselves, for `--apply` expressions
# that follow them to the packages).
{ system, config }:
let
  lib = import ./lib.nix;
  fake = import ./fake.nix { inherit system config; };
  inherit (fake) mkFake checkArgs describe;
  catalog = import ./catalog.nix;

  knownFile = ./known-attributes.toml;
  known =
    if builtins.pathExists knownFile then
      builtins.fromTOML (builtins.readFile knownFile)
    else
      throw "stand-in nixpkgs: known-attributes.toml is missing next to its flake.nix: copy the project's spec/known-attributes.toml there (tests/test_flake.py does)";

  # Attributes of the real nixpkgs the stand-in implements itself (not from known-attributes).
  infrastructure = [
    "lib"
    "config"
    "stdenv"
    "python3"
    "python313"
    "python3Packages"
    "python313Packages"
    "cudaPackages"
    "cudaPackages_12"
    "dockerTools"
    "fakeNss"
    "mkShell"
    "runCommand"
    "writeTextDir"
    "rPackages"
    "nixfmt"
    "nixfmt-tree"
  ];

  cudaSupport = config.cudaSupport or false;

  # A call record that keeps derivations as their attribute paths (JSON-friendly).
  record = fn: args: {
    inherit fn;
    args = describe args;
  };

  # Seed of a builder result: its arguments with derivations as attribute paths (their outPaths
  # enter the identity through `deps`).
  seedOf = args: builtins.toJSON (describe args);

  cudaPackages = builtins.listToAttrs (
    map (
      name:
      lib.nameValuePair name (mkFake {
        attrPath = "cudaPackages.${name}";
        pname = name;
        version = "12.8";
        license = "CUDA EULA";
        free = false;
      })
    ) catalog.cuda
  );

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
      # Named dependencies first: an unfree one is the more useful refusal message.
      deps = map lookup (spec.deps or [ ]) ++ (if withCuda then cudaDeps else [ ]);
      seed = if withCuda then "cuda ${builtins.toJSON (config.cudaCapabilities or [ ])}" else "";
      passthru =
        (if cuda != null then { cudaSupport = withCuda; } else { })
        // {
          standInProvides = spec.provides or [ (builtins.replaceStrings [ "-" ] [ "_" ] name) ];
        };
    };

  # A package set from a list of names and a metadata attrset (catalog.nix).
  mkSet =
    setPath: names: metadata:
    let
      self = builtins.listToAttrs (
        map (name: lib.nameValuePair name (mkPackage setPath (n: self.${n}) name (metadata.${name} or { }))) names
      );
    in
    self;

  # Python packages nixpkgs has that mlws' own app uses (its locked main dependencies, taken from
  # nixpkgs by nix/app.nix) besides the known attributes of the spec.
  infrastructurePython = [
    "jinja2"
    "markupsafe"
  ];

  python3Packages = mkSet "python3Packages." (lib.unique (known.python ++ infrastructurePython)) catalog.python;

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
          standInArgs = {
            packages = selected;
          };
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

  # rPackages.<name>: the names of known-attributes' `r` list.
  knownR = known.r or (throw "stand-in nixpkgs: known-attributes.toml has no `r` list (rPackages attribute names)");
  rPackages = mkSet "rPackages." knownR { };
  isRPackage = p: builtins.isAttrs p && lib.hasPrefix "rPackages." (p.standInAttrPath or "");

  # `.override { packages = [ rPackages... ]; }` of an R wrapper made by callPackage: `allowed` are
  # the arguments of its file (override takes nothing else), `packages` must be rPackages.
  rWrapperWith =
    {
      attrPath,
      pname,
      allowed,
      deps,
      license ? "gpl2Plus",
      mainProgram,
    }:
    args:
    let
      packages = args.packages or [ ];
      notR = builtins.filter (p: !(isRPackage p)) packages;
    in
    if !(builtins.isList packages) then
      throw "stand-in nixpkgs: ${attrPath}.override: packages must be a list of rPackages"
    else if notR != [ ] then
      throw "stand-in nixpkgs: ${attrPath}.override: packages: not rPackages: ${builtins.toJSON (describe notR)}"
    else
      mkFake {
        inherit attrPath pname license mainProgram;
        version = "wrapper";
        deps = deps ++ packages;
        seed = seedOf args;
        passthru = {
          override =
            newArgs:
            rWrapperWith {
              inherit
                attrPath
                pname
                allowed
                deps
                license
                mainProgram
                ;
            } (args // checkArgs "${attrPath}.override" allowed [ ] newArgs);
          standInCall = record "${attrPath}.override" args;
          standInArgs = args;
        };
      };

  # pkgs/development/r-modules/wrapper.nix (rWrapper) takes lib, symlinkJoin, R, makeWrapper,
  # recommendedPackages, packages.
  rWrapper = rWrapperWith {
    attrPath = "rWrapper";
    pname = "R";
    allowed = [
      "lib"
      "symlinkJoin"
      "R"
      "makeWrapper"
      "recommendedPackages"
      "packages"
    ];
    deps = [ plainTop.R ];
    mainProgram = "R";
  } { };

  # rstudioServerWrapper (pkgs/development/r-modules/wrapper-rstudio.nix, older revisions
  # wrapper-rstudio-server.nix): only the arguments both files take.
  rstudioServerWrapper = rWrapperWith {
    attrPath = "rstudioServerWrapper";
    pname = "rstudio-server";
    allowed = [
      "lib"
      "runCommand"
      "R"
      "fontconfig"
      "recommendedPackages"
      "packages"
    ];
    deps = [
      plainTop.rstudio-server
      plainTop.R
    ];
    license = "agpl3Only";
    mainProgram = "rserver";
  } { };

  # writeTextDir path text (pkgs/build-support/trivial-builders): text in $out/<path>.
  writeTextDir =
    path: text:
    if !(builtins.isString path) || lib.hasPrefix "/" path || path == "" then
      throw "stand-in nixpkgs: writeTextDir: the path must be a relative path string (\"share/x\"), got ${builtins.toJSON (describe path)}"
    else if !(builtins.isString text) then
      throw "stand-in nixpkgs: writeTextDir ${path}: the text must be a string, got a ${builtins.typeOf text}"
    else
      mkFake {
        attrPath = "writeTextDir";
        pname = baseNameOf path;
        version = "text";
        seed = seedOf { inherit path text; };
        passthru = {
          standInCall = record "writeTextDir" { inherit path text; };
          standInArgs = { inherit path text; };
        };
      };

  # known.nixpkgs holds attribute paths: "git" (top level) or "rPackages.IRkernel" (in a set).
  pathOf = name: builtins.filter builtins.isString (builtins.split "\\." name);
  topNames = builtins.filter (name: builtins.length (pathOf name) == 1) known.nixpkgs;
  nestedNames = builtins.filter (name: builtins.length (pathOf name) == 2) known.nixpkgs;
  tooDeep = builtins.filter (name: builtins.length (pathOf name) > 2) known.nixpkgs;
  setNames = lib.unique (map (name: builtins.head (pathOf name)) nestedNames);
  clashes = builtins.filter (name: builtins.elem name infrastructure) (topNames ++ setNames);

  nixfmt = mkPackage "" (_: null) "nixfmt" { license = "mpl20"; };

  # pkgs/by-name/ni/nixfmt-tree: treefmt configured for nixfmt; `.override` takes settings
  # (treefmt configuration, merged as modules), runtimeInputs and nixfmtPackage.
  nixfmtTreeWith =
    args:
    mkFake {
      attrPath = "nixfmt-tree";
      pname = "nixfmt-tree";
      deps = [ nixfmt ];
      seed = builtins.toJSON (describe args);
      mainProgram = "treefmt";
      passthru = {
        override = newArgs: nixfmtTreeWith (args // checkArgs "nixfmt-tree.override" [ "settings" "runtimeInputs" "nixfmtPackage" ] [ ] newArgs);
        standInCall = record "nixfmt-tree" args;
        standInArgs = args;
      };
    };

  plainTop = mkSet "" topNames catalog.top;
  # The R wrappers are known attributes with an `.override`; the rest are plain packages.
  top =
    plainTop
    // {
      inherit nixfmt;
      nixfmt-tree = nixfmtTreeWith { };
    }
    // (if plainTop ? rWrapper then { inherit rWrapper; } else { })
    // (if plainTop ? rstudioServerWrapper then { inherit rstudioServerWrapper; } else { });
  nestedSets = builtins.listToAttrs (
    map (
      setName:
      let
        members = map (name: builtins.elemAt (pathOf name) 1) (
          builtins.filter (name: builtins.head (pathOf name) == setName) nestedNames
        );
      in
      lib.nameValuePair setName (mkSet "${setName}." members { })
    ) setNames
  );

  hostPlatform = {
    inherit system;
    isLinux = true;
    parsed.cpu.name = builtins.head (builtins.split "-" system);
  };

  # Argument names of pkgs/build-support/docker/default.nix streamLayeredImage, as
  # /work/shared/reference/nixpkgs-facts.md lists them for 26.05; buildLayeredImage adds
  # `compressor`. (Newer arguments seen only in secondary sources, such as layeringPipeline, are
  # left out until confirmed in nixpkgs' source.)
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
        standInArgs = args;
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
        standInArgs = args;
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
        standInArgs = args;
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
          standInArgs = { inherit name env buildCommand; };
        };
      };
in
if tooDeep != [ ] then
  throw "stand-in nixpkgs: known-attributes.toml: attribute paths deeper than two names are not supported: ${builtins.toJSON tooDeep}"
else if clashes != [ ] then
  throw "stand-in nixpkgs: known-attributes.toml: ${builtins.toJSON clashes} clash with attributes the stand-in implements itself"
else
  top
  // nestedSets
  // {
    inherit
      lib
      config
      python3
      python3Packages
      cudaPackages
      dockerTools
      fakeNss
      mkShell
      runCommand
      writeTextDir
      rPackages
      ;
    python313 = python3;
    python313Packages = python3Packages;
    cudaPackages_12 = cudaPackages;
    stdenv = {
      inherit hostPlatform;
      buildPlatform = hostPlatform;
    };
  }
