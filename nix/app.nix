# nix/app.nix: the `mlws` application (generator CLI + in-image runtime) built with poetry2nix.
#
# poetry2nix reads [tool.poetry] and poetry.lock from the project (see pyproject.toml for why the
# classic form). Only the main dependency group is built: the dev group (pytest, jupyterlab, ...)
# serves the test-suite, not the app, so `checkGroups = [ ]` keeps it out of the build inputs.
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
in
poetry2nixForPkgs.mkPoetryApplication {
  projectDir = src;
  inherit pyproject poetrylock;
  python = pkgs.python3;
  checkGroups = [ ];
  meta.mainProgram = "mlws";
}
