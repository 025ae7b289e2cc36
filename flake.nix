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

  # What follows what (one nixpkgs in the whole graph, so every package and the app share one
  # store closure and one evaluation):
  #   poetry2nix/nixpkgs                    follows our nixpkgs;
  #   poetry2nix/treefmt-nix/nixpkgs and
  #   poetry2nix/nix-github-actions/nixpkgs follow poetry2nix/nixpkgs (poetry2nix's own flake.nix
  #                                         says so), hence ours too.
  # poetry2nix's flake-utils (with its own nix-systems), systems, treefmt-nix and nix-github-actions
  # stay locked at the revisions poetry2nix's own lock had at ce2369db: we use none of them, and our
  # outputs do not depend on them (poetry2nix.lib.mkPoetry2Nix only needs the `pkgs` we pass).
  # The two nix-systems nodes are the same commit, fetched once. A nested override such as
  # `inputs.flake-utils.inputs.systems.follows` is avoided on purpose: an override entry without
  # a url makes Nix 2.8 replace that input with the registry entry of its name.
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    poetry2nix = {
      url = "github:nix-community/poetry2nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      poetry2nix,
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

      # The package set for a flavor's nixpkgsConfig. Flavors without special needs share
      # legacyPackages (one evaluation); others (the GPU flavor: allowUnfree, cudaSupport,
      # cudaCapabilities) get nixpkgs imported with their config.
      isPlainConfig = config: builtins.removeAttrs config [ "allowUnfree" ] == { } && !(config.allowUnfree or false);

      perSystem =
        system:
        let
          basePkgs = nixpkgs.legacyPackages.${system};

          mlwsApp = import ./nix/app.nix {
            pkgs = basePkgs;
            inherit poetry2nix;
            src = sources.app;
            pyproject = ./pyproject.toml;
            poetrylock = ./poetry.lock;
          };

          checkers = import ./nix/checks.nix {
            pkgs = basePkgs;
            inherit mlwsApp;
          };

          buildFlavor =
            name:
            let
              flavor = mlwsLib.flavors.${name};
              pkgs =
                if isPlainConfig flavor.nixpkgsConfig then
                  basePkgs
                else
                  import nixpkgs {
                    inherit system;
                    config = flavor.nixpkgsConfig;
                  };
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
    };
}
