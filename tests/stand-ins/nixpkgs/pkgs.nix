# The stand-in package set for one system and config (what `import nixpkgs { ... }` returns).
#
# Everything it knows about packages comes from the package base, known-attributes.toml (the
# project's spec/known-attributes.toml, copied next to this file: a flake's source is copied to the
# store alone, so the stand-in cannot read ../../../spec itself). Per entry:
#   removed        the attribute throws nixpkgs' message (as the removal aliases of
#                  pkgs/top-level/aliases.nix and python-aliases.nix do);
#   renamed        the attribute is the new one (an alias; missing with config.allowAliases = false);
#   licenses, platforms, broken ("always" or "cudaSupport"), vulnerabilities
#                  meta, checked as check-meta.nix does (fake.nix) when the package is evaluated;
#   cuda           "config": a CUDA build when config.cudaSupport; "always": always one. A CUDA
#                  build depends on the unfree cudaPackages of `cuda_libs` and on `cuda_deps`, and
#                  records `cudaSupport = true`; `platforms_with_cuda` limits where it evaluates;
#   deps           the runtime dependencies python3.withPackages walks to the closure;
#   provides       the modules a Python package installs (two in one closure: buildEnv collision);
#   top_level      what the output holds at its top besides bin/ lib/ share/ (images refuse it);
#   override       the `.override` arguments it takes and the licences each adds when true.
# The `infrastructure` names below are the builders and helpers nixpkgs has besides. Builders
# (dockerTools.buildLayeredImage, mkShell, python3.withPackages, buildPythonApplication,
# runCommand, writeTextDir, fakeNss.override, rWrapper.override, rstudioServerWrapper.override)
# check their arguments against the names the real functions take, and record the call:
# `standInCall = { fn; args; }` (JSON-friendly: derivations as their attribute paths) and
# `standInArgs` (the arguments themselves, for `--apply` expressions that follow them).
{ system, config }:
let
  lib = import ./lib.nix;
  fake = import ./fake.nix { inherit system config; };
  inherit (fake) mkFake checkArgs describe;

  knownFile = ./known-attributes.toml;
  known =
    if builtins.pathExists knownFile then
      builtins.fromTOML (builtins.readFile knownFile)
    else
      throw "stand-in nixpkgs: known-attributes.toml is missing next to its flake.nix: copy the project's spec/known-attributes.toml there (tests/test_flake.py does)";

  # Attributes of the real nixpkgs the stand-in implements itself (not from the base).
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
  allowAliases = config.allowAliases or true;

  # A call record that keeps derivations as their attribute paths (JSON-friendly).
  record = fn: args: {
    inherit fn;
    args = describe args;
  };

  # Seed of a builder result: its arguments with derivations as attribute paths (their outPaths
  # enter the identity through `deps`).
  seedOf = args: builtins.toJSON (describe args);

  # Licence short names -> { shortName; free; } (free = false for those [licenses] marks so).
  unfreeNames = builtins.filter (n: (known.licenses.${n}.free or true) == false) (builtins.attrNames (known.licenses or { }));
  licence = shortName: {
    inherit shortName;
    free = !(builtins.elem shortName unfreeNames);
  };

  cudaPackages = builtins.mapAttrs (
    name: entry:
    mkFake {
      attrPath = "cudaPackages.${name}";
      pname = name;
      version = "12.8";
      position = "pkgs/development/cuda-modules";
      licenses = map licence entry.licenses;
    }
  ) (known.cudaPackages or { });

  # One package of the base. `lookup` finds a dependency of the same set by name.
  mkPackage =
    setPath: lookup: name: entry:
    let
      cuda = entry.cuda or null;
      withCuda = cuda == "always" || (cuda == "config" && cudaSupport);
      broken = (entry.broken or null) == "always" || ((entry.broken or null) == "cudaSupport" && cudaSupport);
      platforms =
        if withCuda && entry ? platforms_with_cuda then entry.platforms_with_cuda else entry.platforms or [ "x86_64-linux" "aarch64-linux" ];
      cudaLibs = map (n: cudaPackages.${n}) (entry.cuda_libs or [ "cuda_cudart" "libcublas" ]);
      depNames = (entry.deps or [ ]) ++ (if withCuda then entry.cuda_deps or [ ] else [ ]);
      make =
        overrides:
        let
          extraLicences = lib.concatMap (arg: if overrides.${arg} then entry.override.${arg} else [ ]) (builtins.attrNames overrides);
        in
        mkFake {
          attrPath = "${setPath}${name}";
          pname = name;
          version = entry.version or "1.0";
          position = entry.file;
          licenses = map licence ((entry.licenses or [ "mit" ]) ++ extraLicences);
          inherit platforms broken;
          knownVulnerabilities = entry.vulnerabilities or [ ];
          # Named dependencies first: their refusal is the more useful message.
          deps = map lookup depNames ++ (if withCuda then cudaLibs else [ ]);
          seed = builtins.toJSON {
            inherit overrides;
            cuda = if withCuda then config.cudaCapabilities or "default" else null;
          };
          passthru =
            (if cuda != null then { cudaSupport = withCuda; } else { })
            // {
              standInCudaBuild = withCuda;
              standInDeps = map lookup depNames;
              standInProvides = entry.provides or [ (builtins.replaceStrings [ "-" ] [ "_" ] name) ];
              standInTopLevel = entry.top_level or [ ];
              standInOverrides = overrides;
              override =
                args:
                let
                  allowed = builtins.attrNames (entry.override or { });
                in
                make (overrides // checkArgs "${setPath}${name}.override" allowed [ ] args);
            };
        };
      # tensorflow-bin's own refusal (python-modules/tensorflow/bin.nix): no wheel for the key.
      unsupportedWithCuda = withCuda && entry ? platforms_with_cuda && !(builtins.elem system entry.platforms_with_cuda);
    in
    if unsupportedWithCuda then
      throw "${name}: unsupported configuration: ${system}_313_gpu"
    else
      make { };

  # A package set from a base section (name -> entry): removed names throw nixpkgs' message,
  # renamed ones are aliases of their new name (absent with allowAliases = false).
  mkSet =
    setPath: entries:
    let
      isPlain = name: !(entries.${name} ? removed || entries.${name} ? renamed);
      self = builtins.listToAttrs (
        map (
          name:
          let
            entry = entries.${name};
          in
          lib.nameValuePair name (
            if entry ? removed then
              throw entry.removed
            else if entry ? renamed then
              self.${entry.renamed}
            else
              mkPackage setPath (n: self.${n}) name entry
          )
        ) (builtins.filter (name: isPlain name || allowAliases) (builtins.attrNames entries))
      );
    in
    self;

  python3Packages = mkSet "python3Packages." known.python // {
    inherit buildPythonApplication;
  };

  isPythonPackage = p: builtins.isAttrs p && lib.hasPrefix "python3Packages." (p.standInAttrPath or "");

  # The runtime closure of Python packages (their `deps`, transitively), each once.
  pythonClosure =
    packages:
    map (item: item.package) (
      builtins.genericClosure {
        startSet = map (p: {
          key = p.standInAttrPath;
          package = p;
        }) packages;
        operator =
          item:
          map (p: {
            key = p.standInAttrPath;
            package = p;
          }) (item.package.standInDeps or [ ]);
      }
    );

  # buildEnv's builder (pkgs/build-support/buildenv/builder.pl) dies on the first file two
  # packages both install, as python3.withPackages builds with ignoreCollisions = false
  # (pkgs/development/interpreters/python/wrapper.nix). Modules stand for their files here.
  checkCollisions =
    envName: closure:
    builtins.foldl' (
      owners: p:
      builtins.foldl' (
        owners': module:
        let
          path = p: "${p.name}/lib/python3.13/site-packages/${builtins.replaceStrings [ "." ] [ "/" ] module}";
        in
        if owners' ? ${module} && owners'.${module}.standInAttrPath != p.standInAttrPath then
          throw "stand-in nixpkgs: builder for '${envName}' failed: collision between `${path p}' and `${path owners'.${module}}' (python3Packages: ${p.standInAttrPath} and ${owners'.${module}.standInAttrPath} both install '${module}')"
        else
          owners' // { ${module} = p; }
      ) owners p.standInProvides
    ) { } closure;

  # python3Packages.buildPythonApplication (pkgs/development/interpreters/python/
  # mk-python-derivation.nix): only the arguments mlws may sensibly pass.
  buildPythonApplication =
    rawArgs:
    let
      args = checkArgs "python3Packages.buildPythonApplication" [
        "pname"
        "version"
        "src"
        "pyproject"
        "format"
        "build-system"
        "dependencies"
        "optional-dependencies"
        "nativeBuildInputs"
        "buildInputs"
        "propagatedBuildInputs"
        "nativeCheckInputs"
        "pythonImportsCheck"
        "doCheck"
        "postInstall"
        "passthru"
        "meta"
      ] [ "pname" "version" "src" ] rawArgs;
      dependencies = args.dependencies or [ ];
      notPython = builtins.filter (p: !(isPythonPackage p)) (dependencies ++ args.build-system or [ ]);
      closure = pythonClosure dependencies;
    in
    if !(args ? pyproject || args ? format) then
      throw "stand-in nixpkgs: buildPythonApplication ${args.pname}: set pyproject = true (or format): nixpkgs refuses a build without either"
    else if notPython != [ ] then
      throw "stand-in nixpkgs: buildPythonApplication ${args.pname}: build-system and dependencies must be python3Packages: ${builtins.toJSON (describe notPython)}"
    else
      builtins.seq (checkCollisions "${args.pname}-${args.version}" closure) (mkFake {
        attrPath = "python3Packages.buildPythonApplication";
        inherit (args) pname version;
        position = "pkgs/development/interpreters/python/mk-python-derivation.nix";
        deps = [ python3 ] ++ (args.build-system or [ ]) ++ closure;
        seed = seedOf (builtins.removeAttrs args [ "passthru" "meta" ]);
        mainProgram = args.meta.mainProgram or args.pname;
        passthru = (args.passthru or { }) // {
          standInCall = record "python3Packages.buildPythonApplication" (builtins.removeAttrs args [ "src" ] // { src = toString args.src; });
          standInArgs = args;
          standInClosure = closure;
        };
      });

  # python3.withPackages (ps: [ ... ]): one argument, a function of the package set returning a
  # list of python3Packages. The environment holds their whole runtime closure (`deps` walked
  # transitively), and two packages of it installing one module collide, as in buildEnv.
  withPackages =
    f:
    let
      selected = if builtins.isFunction f then f python3Packages else throw "stand-in nixpkgs: python3.withPackages takes a function (ps: [ ... ]), got a ${builtins.typeOf f}";
      notPython = builtins.filter (p: !(isPythonPackage p)) selected;
      closure = pythonClosure selected;
      call = record "python3.withPackages" { packages = selected; };
    in
    if !(builtins.isList selected) then
      throw "stand-in nixpkgs: python3.withPackages: the function must return a list"
    else if notPython != [ ] then
      throw "stand-in nixpkgs: python3.withPackages: not python3Packages: ${builtins.toJSON (describe notPython)}"
    else
      builtins.seq (checkCollisions "python3-3.13.9-env" closure) (mkFake {
        attrPath = "python3.withPackages";
        pname = "python3";
        version = "3.13.9-env";
        position = "pkgs/development/interpreters/python/wrapper.nix";
        licenses = [ (licence "psfl") ];
        deps = [ python3 ] ++ closure;
        passthru = {
          standInCall = call;
          standInArgs = {
            packages = selected;
          };
          standInClosure = closure;
        };
      });

  python3 = mkFake {
    attrPath = "python3";
    pname = "python3";
    version = "3.13.9";
    position = "pkgs/development/interpreters/python/cpython/default.nix";
    licenses = [ (licence "psfl") ];
    mainProgram = "python3";
    passthru = {
      pkgs = python3Packages;
      inherit withPackages;
      pythonVersion = "3.13";
      sitePackages = "lib/python3.13/site-packages";
    };
  };

  # rPackages.<name>: the base's `r` section.
  knownR = known.r or (throw "stand-in nixpkgs: known-attributes.toml has no [r.<name>] entries (rPackages attribute names)");
  rPackages = mkSet "rPackages." knownR;
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
      position,
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
        inherit attrPath pname mainProgram position;
        licenses = [ (licence license) ];
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
                position
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
    position = "pkgs/development/r-modules/wrapper.nix";
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
    position = "pkgs/development/r-modules/wrapper-rstudio.nix";
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

  # The base's nixpkgs section holds attribute paths: "git" (top level) or "set.attribute".
  knownTop = known.nixpkgs;
  pathOf = name: builtins.filter builtins.isString (builtins.split "\\." name);
  topNames = builtins.filter (name: builtins.length (pathOf name) == 1) (builtins.attrNames knownTop);
  nestedNames = builtins.filter (name: builtins.length (pathOf name) == 2) (builtins.attrNames knownTop);
  tooDeep = builtins.filter (name: builtins.length (pathOf name) > 2) (builtins.attrNames knownTop);
  setNames = lib.unique (map (name: builtins.head (pathOf name)) nestedNames);
  clashes = builtins.filter (name: builtins.elem name infrastructure) (topNames ++ setNames);

  nixfmt = mkPackage "" (_: null) "nixfmt" {
    file = "pkgs/by-name/ni/nixfmt/package.nix";
    licenses = [ "mpl20" ];
  };

  # pkgs/by-name/ni/nixfmt-tree: treefmt configured for nixfmt; `.override` takes settings
  # (treefmt configuration, merged as modules), runtimeInputs and nixfmtPackage.
  nixfmtTreeWith =
    args:
    mkFake {
      attrPath = "nixfmt-tree";
      pname = "nixfmt-tree";
      position = "pkgs/by-name/ni/nixfmt-tree/package.nix";
      deps = [ nixfmt ];
      seed = builtins.toJSON (describe args);
      mainProgram = "treefmt";
      passthru = {
        override = newArgs: nixfmtTreeWith (args // checkArgs "nixfmt-tree.override" [ "settings" "runtimeInputs" "nixfmtPackage" ] [ ] newArgs);
        standInCall = record "nixfmt-tree" args;
        standInArgs = args;
      };
    };

  plainTop = mkSet "" (lib.filterAttrs (name: _: builtins.elem name topNames) knownTop);
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
      lib.nameValuePair setName (
        mkSet "${setName}." (builtins.listToAttrs (map (m: lib.nameValuePair m knownTop."${setName}.${m}") members))
      )
    ) setNames
  );

  hostPlatform = {
    inherit system;
    isLinux = true;
    parsed.cpu.name = builtins.head (builtins.split "-" system);
  };

  # Argument names of pkgs/build-support/docker/default.nix streamLayeredImage, as
  # ../shared/reference/nixpkgs-facts.md lists them for 26.05; buildLayeredImage adds
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
      contentList = if builtins.isList contents then contents else [ contents ];
      badContents = builtins.filter (c: !(builtins.isAttrs c && (c.type or null) == "derivation")) contentList;
      # Packages whose output is a whole distribution (the base's `top_level`: spark).
      spilling = builtins.filter (c: (c.standInTopLevel or [ ]) != [ ]) contentList;
    in
    if (args.created or "") == "now" then
      throw "stand-in nixpkgs: ${fn}: created = \"now\" makes the image unreproducible"
    else if badEnv != [ ] then
      throw "stand-in nixpkgs: ${fn}: config.Env entries must be \"NAME=value\" strings: ${builtins.toJSON badEnv}"
    else if badContents != [ ] then
      throw "stand-in nixpkgs: ${fn}: contents must be derivations"
    else if spilling != [ ] then
      throw "stand-in nixpkgs: ${fn} ${args.name}: contents: ${builtins.concatStringsSep "; " (map (c: "${c.name} would put ${builtins.concatStringsSep ", " c.standInTopLevel} at the image's /") spilling)} (dockerTools links every content's top level into /: give the image only its programs)"
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
