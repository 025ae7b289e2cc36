# Strict stand-in for github:nix-community/poetry2nix (rev ce2369db), for evaluating mlws' flake
# offline: nix eval --override-input poetry2nix path:/abs/tests/stand-ins/poetry2nix ...
#
# Offers what mlws uses of the real flake: lib.mkPoetry2Nix { pkgs } -> { mkPoetryApplication,
# overrides.withDefaults, overrides.withoutDefaults, defaultPoetryOverrides }.
# mkPoetryApplication takes the real function's named arguments (a few mkDerivation ones besides),
# reads pyproject.toml and poetry.lock from projectDir as the real one does (so a missing or broken
# file fails here too), and returns a fake derivation recording the call in
# `standInCall = { fn; args; }` plus the project's [tool.poetry] name, version and scripts.
{
  description = "Strict evaluation-only stand-in for poetry2nix (mlws tests)";

  outputs =
    { self }:
    {
      lib.mkPoetry2Nix =
        args:
        let
          pkgs = args.pkgs;
          # Named arguments of mkPoetryApplication at ce2369db, then mkDerivation arguments mlws
          # may pass through its `...`.
          allowed = [
            "projectDir"
            "src"
            "pyproject"
            "poetrylock"
            "overrides"
            "meta"
            "python"
            "pwd"
            "preferWheels"
            "groups"
            "checkGroups"
            "extras"
            "doCheck"
            "passthru"
            "nativeBuildInputs"
            "buildInputs"
            "propagatedBuildInputs"
            "postInstall"
          ];
        in
        if builtins.attrNames args != [ "pkgs" ] then
          throw "stand-in poetry2nix: mkPoetry2Nix takes exactly { pkgs }, got ${builtins.toJSON (builtins.attrNames args)}"
        else
        rec {
          # Overlays of the Python set: the real defaults are poetry2nix's own fix-ups, marked here.
          defaultPoetryOverrides = "<poetry2nix default overrides>";
          overrides = {
            withDefaults = overlay: [
              overlay
              defaultPoetryOverrides
            ];
            withoutDefaults = overlay: [ overlay ];
          };

          mkPoetryApplication =
            attrs:
            let
              unknown = builtins.filter (n: !(builtins.elem n allowed)) (builtins.attrNames attrs);
              projectDir = attrs.projectDir or null;
              pyprojectPath = attrs.pyproject or (projectDir + "/pyproject.toml");
              poetrylockPath = attrs.poetrylock or (projectDir + "/poetry.lock");
              pyProject = builtins.fromTOML (builtins.readFile pyprojectPath);
              poetryLock = builtins.fromTOML (builtins.readFile poetrylockPath);
              poetry =
                pyProject.tool.poetry
                  or (throw "stand-in poetry2nix: ${toString pyprojectPath} has no [tool.poetry] table (poetry2nix reads only tool.poetry)");
              python = attrs.python or pkgs.python3;

              # The locked packages as poetry2nix would build them (fetched from PyPI), then the
              # caller's overlays applied in order, as poetry2nix composes them.
              mainPackages = builtins.filter (p: builtins.elem "main" (p.groups or [ "main" ])) (poetryLock.package or [ ]);
              fromPypi = builtins.listToAttrs (
                map (p: {
                  name = p.name;
                  value = pkgs.runCommand "python3-${p.name}-${p.version}-from-pypi" { } "poetry2nix fetch-from-pypi ${p.name}";
                }) mainPackages
              );
              givenOverrides =
                let
                  given = attrs.overrides or [ defaultPoetryOverrides ];
                in
                if builtins.isList given then given else [ given ];
              badOverrides = builtins.filter (o: !(builtins.isFunction o || o == defaultPoetryOverrides)) givenOverrides;
              overlays =
                if badOverrides != [ ] then
                  throw "stand-in poetry2nix: mkPoetryApplication: overrides must be overlays (final: prev: { ... }) or defaultPoetryOverrides"
                else
                  builtins.filter builtins.isFunction givenOverrides;
              pythonSet = builtins.foldl' (prev: overlay: prev // overlay pythonSet prev) fromPypi overlays;
              app = pkgs.runCommand "${poetry.name}-${poetry.version}" {
                nativeBuildInputs = [ python ];
              } "poetry2nix build of ${poetry.name}";
            in
            if unknown != [ ] then
              throw "stand-in poetry2nix: unknown argument(s) ${builtins.toJSON unknown} to mkPoetryApplication"
            else if projectDir == null && !(attrs ? src) then
              throw "stand-in poetry2nix: mkPoetryApplication needs projectDir (or src, pyproject and poetrylock)"
            else if !(python ? withPackages) then
              throw "stand-in poetry2nix: mkPoetryApplication: python must be a Python interpreter (pkgs.python3)"
            else
              builtins.seq (builtins.length (poetryLock.package or [ ])) (
                app
                // {
                  pname = poetry.name;
                  inherit (poetry) version;
                  meta = app.meta // (attrs.meta or { });
                  standInCall = {
                    fn = "poetry2nix.mkPoetryApplication";
                    args = {
                      projectDir = toString projectDir;
                      src = toString (attrs.src or projectDir);
                      python = python.name;
                      groups = attrs.groups or [ ];
                      checkGroups = attrs.checkGroups or [ "dev" ];
                      meta = attrs.meta or { };
                    };
                    # Where each main dependency came from: a nixpkgs attribute path or a
                    # poetry2nix PyPI build.
                    dependencies = builtins.listToAttrs (
                      map (p: {
                        name = p.name;
                        value = pythonSet.${p.name}.standInAttrPath or pythonSet.${p.name}.name;
                      }) mainPackages
                    );
                    project = {
                      inherit (poetry) name version;
                      scripts = poetry.scripts or { };
                      lockedPackages = map (p: p.name) (poetryLock.package or [ ]);
                    };
                  };
                }
              );
        };
    };
}
