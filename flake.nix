{
  description = "mlws: ML workspace images (Jupyter, VS Code, desktop and more behind one port) built with Nix from one declarative spec";

  # Offered to users of the flake (they are asked before Nix trusts it): the CUDA binary cache, so
  # the GPU flavor's CUDA packages are downloaded rather than built for hours.
  nixConfig = {
    extra-substituters = [ "https://cache.nixos-cuda.org" ];
    extra-trusted-public-keys = [
      "cache.nixos-cuda.org:74DUi4Ye579gUqzH4ziL9IyiJBlDpMRn9MBN8oNan9M="
    ];
  };

  # One input: nixpkgs. The `mlws` app is built with nixpkgs' own Python builder
  # (nix/app.nix), so poetry2nix (unmaintained since 2024, its PyPI fetcher broken with current
  # nixpkgs) is not on the critical path; pyproject.toml and poetry.lock stay consumable by it
  # (tests/test_flake_stand_ins.py checks that) for users who prefer it.
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
  };

  outputs =
    {
      self,
      nixpkgs,
    }:
    let
      inherit (nixpkgs) lib;

      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];

      mlwsLib = import ./nix/lib.nix {
        inherit lib;
        modulesDir = ./modules;
        flavorsDir = ./flavors;
      };

      sources = import ./nix/source.nix { root = ./.; };

      poetryProject = (builtins.fromTOML (builtins.readFile ./pyproject.toml)).tool.poetry;
      inherit (poetryProject) version;

      # The commit the image was built from. A tree with uncommitted changes has no rev; newer Nix
      # gives dirtyRev ("<rev>-dirty") instead, older Nix nothing.
      revision = self.rev or self.dirtyRev or "dirty";

      # Fixed, so rebuilding one commit gives the same image ("now" would not).
      created = "1970-01-01T00:00:01Z";

      imageMetadata = {
        inherit version revision created;
        # Where the source lives and under which licence, as pyproject.toml declares them.
        source = poetryProject.repository or poetryProject.homepage or "unknown";
        licenses = poetryProject.license or "NOASSERTION";
      };

      # `nix develop` opens the smallest flavor; `nix build` builds the main image (the one the
      # original project published as ml-workspace), or the smallest where it is not built.
      defaultFlavor = "minimal";
      mainImage = "ml-workspace";

      # The nixpkgs config of a flavor: its nixpkgsConfig (cudaSupport for gpu) and, when it
      # admits unfree licences, an allowUnfreePredicate that admits exactly those by short name, as
      # nixpkgs' CUDA guide (doc/languages-frameworks/cuda.section.md) and the CUDA cache's jobset
      # (pkgs/top-level/release-cuda.nix) write it. Never allowUnfree: an unfree licence nobody
      # listed stops the evaluation. The predicate does not change store hashes, so the CUDA cache
      # still serves what it built.
      admits =
        licences: package:
        builtins.all (licence: licence.free || builtins.elem licence.shortName licences) (
          if builtins.isList package.meta.license then package.meta.license else [ package.meta.license ]
        );
      nixpkgsConfigOf =
        flavor:
        flavor.nixpkgsConfig
        // (if flavor.unfreeLicenses == [ ] then { } else { allowUnfreePredicate = admits flavor.unfreeLicenses; });

      perSystem =
        system:
        let
          basePkgs = nixpkgs.legacyPackages.${system};

          mlwsApp = import ./nix/app.nix {
            pkgs = basePkgs;
            src = sources.app;
            pyproject = ./pyproject.toml;
          };

          checkers = import ./nix/checks.nix {
            pkgs = basePkgs;
            inherit mlwsApp;
          };

          buildFlavor =
            name:
            let
              flavor = mlwsLib.flavors.${name};
              config = nixpkgsConfigOf flavor;
              # Flavors without a config share legacyPackages (one evaluation).
              pkgs = if config == { } then basePkgs else import nixpkgs { inherit system config; };
              resolved = mlwsLib.resolve pkgs flavor;
              pythonEnv = import ./nix/python.nix {
                inherit pkgs;
                inherit (resolved) pythonPackages;
              };
              common = {
                inherit pkgs flavor pythonEnv mlwsApp;
                inherit (resolved) systemPackages;
                packageEnv = resolved.env;
              };
            in
            {
              inherit flavor pkgs pythonEnv;
              inherit (resolved) systemPackages tools;
              image = import ./nix/image.nix (common // imageMetadata);
              devShell = import ./nix/devshell.nix common;
              # nix/job-image.nix: this flavor's image with a job's code and Python packages baked in.
              jobImage = import ./nix/job-image.nix (common // imageMetadata // { inherit (resolved) pythonPackages; });
            };

          built = lib.genAttrs (mlwsLib.flavorsFor system) buildFlavor;

          images = lib.mapAttrs' (_: b: lib.nameValuePair b.flavor.imageName b.image) built;

          # A flavor's own check plus its ancestors' checks run against the flavor's packages.
          flavorChecks =
            name: b:
            builtins.listToAttrs (
              map (
                owner:
                lib.nameValuePair (if owner == name then "${name}-commands" else "${name}-commands-of-${owner}") (
                  checkers.commandsCheck {
                    name = "${name}-${owner}";
                    manifest = mlwsLib.flavors.${owner}.manifest;
                    inherit (b) systemPackages pythonEnv;
                  }
                )
              ) ([ name ] ++ mlwsLib.ancestors b.flavor)
            )
            // {
              "${name}-image" = b.image;
            };
        in
        {
          packages =
            images
            // {
              mlws = mlwsApp;
              default = images.${mainImage} or built.${defaultFlavor}.image;
            };

          devShells = lib.mapAttrs (_: b: b.devShell) built // {
            default = built.${defaultFlavor}.devShell;
          };

          apps = rec {
            mlws = {
              type = "app";
              program = "${mlwsApp}/bin/mlws";
            };
            default = mlws;
          };

          checks = {
            mlws-generate = checkers.generateCheck sources.generated;
          } // lib.concatMapAttrs flavorChecks built;

          # For the flake's lib.mkJobImage (below), one per flavor.
          jobImages = lib.mapAttrs (_: b: b.jobImage) built;

          # `nix fmt`: nixfmt (RFC style) over the tree, through nixpkgs' treefmt starter, which
          # also works with Nix versions whose `nix fmt` passes no file arguments. The generated
          # modules/ and flavors/ are left as the generator writes them (`mlws generate --check`
          # compares them byte for byte).
          formatter = basePkgs.nixfmt-tree.override {
            settings.formatter.nixfmt.excludes = [
              "modules/*.nix"
              "flavors/*.nix"
            ];
          };
        };

      bySystem = lib.genAttrs systems perSystem;
      output = attr: lib.mapAttrs (_: outputs: outputs.${attr}) bySystem;
    in
    {
      packages = output "packages";
      devShells = output "devShells";
      apps = output "apps";
      checks = output "checks";
      formatter = output "formatter";

      # `mlws.lib.mkJobImage { system; flavor ? "minimal"; name; code; pythonPackages ? ps: [ ]; ... }`:
      # an image that runs `code` as a job (EXECUTE_CODE); arguments in nix/job-image.nix.
      lib.mkJobImage =
        {
          system,
          flavor ? defaultFlavor,
          ...
        }@args:
        let
          jobImages = (bySystem.${system} or (throw "mlws.lib.mkJobImage: system ${builtins.toJSON system}: expected one of ${builtins.toJSON systems}")).jobImages;
        in
        (jobImages.${flavor} or (throw "mlws.lib.mkJobImage: flavor ${builtins.toJSON flavor}: expected one built for ${system}: ${builtins.toJSON (builtins.attrNames jobImages)}"))
          (builtins.removeAttrs args [ "system" "flavor" ]);
    };
}
