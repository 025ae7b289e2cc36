# nix/app.nix: the `mlws` application (generator CLI + in-image runtime), built with nixpkgs' own
# Python builder from pyproject.toml.
#
# `python3Packages.buildPythonApplication` with `pyproject = true` runs the PEP 517 build of the
# project's declared backend, poetry-core (`[build-system]` in pyproject.toml), and installs the
# `mlws` script of `[tool.poetry.scripts]`. Its runtime dependencies are the main dependencies of
# `[tool.poetry.dependencies]` (python itself excluded), each taken from nixpkgs' python3Packages:
# the very builds the images' Python environment uses, from the binary cache. Arguments read in
# nixpkgs' pkgs/development/interpreters/python/mk-python-derivation.nix (search index copies
# 154405943 / 57666329113, late 2026): pyproject, build-system, dependencies, pythonImportsCheck,
# meta. poetry2nix is not used (unmaintained since 2024; its PyPI fetcher fails with current
# nixpkgs); the project stays consumable by it (tests/test_flake_stand_ins.py).
#
# Arguments (an attribute set):
#   pkgs       nixpkgs package set of the target system.
#   src        the project source holding pyproject.toml, poetry.lock, README.md, generator/ and
#              runtime/ (nix/source.nix `app`): what the build copies.
#   pyproject  path of pyproject.toml, read at evaluation time (the flake's own file: `src` is a
#              filtered copy that `nix flake check --no-build` does not write to the store).
#
# Returns the application derivation; its `bin/mlws` is the click CLI (`mlws generate`,
# `mlws start`, ...).
{
  pkgs,
  src,
  pyproject,
}:
let
  project = (builtins.fromTOML (builtins.readFile pyproject)).tool.poetry;
  python3Packages = pkgs.python3Packages;
  # PyPI names as nixpkgs spells its attributes (lower case; nixpkgs uses - where PyPI has _ or .).
  attributeOf = name: builtins.replaceStrings [ "_" "." ] [ "-" "-" ] (pkgs.lib.toLower name);
  dependencyNames = builtins.filter (name: name != "python") (builtins.attrNames project.dependencies);
in
python3Packages.buildPythonApplication {
  pname = project.name;
  inherit (project) version;
  inherit src;
  pyproject = true;
  build-system = [ python3Packages.poetry-core ];
  dependencies = map (name: python3Packages.${attributeOf name}) dependencyNames;
  pythonImportsCheck = [
    "generator"
    "runtime"
  ];
  meta = {
    inherit (project) description;
    mainProgram = "mlws";
  };
}
