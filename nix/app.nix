# nix/app.nix: the `mlws` application (generator CLI + in-image runtime) built with poetry2nix.
#
# poetry2nix reads [tool.poetry] and poetry.lock from the project (see pyproject.toml for why the
# classic form). Only the main dependency group is built: the dev group (pytest, jupyterlab, ...)
# serves the test-suite, not the app, so `checkGroups = [ ]` keeps it out of the build inputs.
#
# The main group's locked packages (click, jinja2, markupsafe, supervisor, ...) are taken from
# nixpkgs' python3Packages where nixpkgs has them, instead of being fetched from PyPI by
# poetry2nix: poetry2nix is unmaintained since 2024, and its PyPI fetcher script (rev ce2369db)
# fails under the stricter builder of recent nixpkgs ("NIX_CURL_FLAGS: unbound variable"). This
# also gives the app the very builds the images' Python environment uses, from the binary cache.
#
# Arguments (an attribute set):
#   pkgs        nixpkgs package set of the target system.
#   poetry2nix  the poetry2nix flake input; its `lib.mkPoetry2Nix { pkgs; }` returns the poetry2nix
#               functions bound to our nixpkgs.
#   src         the project source holding pyproject.toml, poetry.lock, README.md, generator/ and
#               runtime/ (nix/source.nix `app`): what the build copies.
#   pyproject   path of pyproject.toml, and
#   poetrylock  path of poetry.lock, both read at evaluation time. They are passed as the flake's
#               own files rather than read out of `src`: `src` is a filtered copy that
#               `nix flake check --no-build` does not write to the store, so reading files inside
#               it would fail there.
#
# Returns the application derivation; its `bin/mlws` is the click CLI (`mlws generate`,
# `mlws start`, ...).
{
  pkgs,
  poetry2nix,
  src,
  pyproject,
  poetrylock,
}:
let
  poetry2nixForPkgs = poetry2nix.lib.mkPoetry2Nix { inherit pkgs; };

  # Lock files of poetry >= 1.2 list each package's groups; older ones only hold main packages.
  lockedPackages = (builtins.fromTOML (builtins.readFile poetrylock)).package or [ ];
  mainPackageNames = map (package: package.name) (
    builtins.filter (package: builtins.elem "main" (package.groups or [ "main" ])) lockedPackages
  );

  fromNixpkgs =
    _final: prev:
    builtins.listToAttrs (
      map (name: {
        inherit name;
        value = pkgs.python3Packages.${name} or prev.${name};
      }) mainPackageNames
    );
in
poetry2nixForPkgs.mkPoetryApplication {
  # `src` given explicitly: it is already filtered (nix/source.nix), so poetry2nix's own
  # cleanPythonSources, meant for a plain folder, is not needed.
  projectDir = src;
  inherit src pyproject poetrylock;
  python = pkgs.python3;
  # Applied in order: poetry2nix's fix-ups for what it builds itself, then ours last, so the
  # nixpkgs packages are used untouched (and found in the binary cache).
  overrides = [
    poetry2nixForPkgs.defaultPoetryOverrides
    fromNixpkgs
  ];
  checkGroups = [ ];
  meta.mainProgram = "mlws";
}
