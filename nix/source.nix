# nix/source.nix: the parts of the repository that derivations read, as filtered store paths.
#
# Filtering keeps unrelated edits (tests, docs, bench) from changing the app's or the checks'
# store paths, so they do not trigger rebuilds of the images.
#
# Arguments (an attribute set):
#   root  the repository root (the flake's `./.`).
#
# Returns:
#   app        pyproject.toml, poetry.lock, README.md and the Python packages pyproject.toml's
#              `tool.poetry.packages` lists (generator/, runtime/, ...): what the poetry-core build
#              of the `mlws` application (nix/app.nix) reads.
#   generated  app's files plus spec/, modules/ and flavors/: what `mlws generate --check` reads.
{ root }:
let
  rootString = toString root;

  # Path of a file relative to the root ("generator/cli.py"), from the absolute path the filter
  # receives.
  relative = path: builtins.substring (builtins.stringLength rootString + 1) (builtins.stringLength path) path;

  topOf = rel: builtins.head (builtins.split "/" rel);

  # Bytecode caches are build-machine litter, never source.
  isCache = path: builtins.baseNameOf path == "__pycache__" || builtins.match ".*\\.py[co]" path != null;

  keepTop =
    tops: path: _type:
    !(isCache path) && builtins.elem (topOf (relative path)) tops;

  projectPackages = map (package: package.include) (builtins.fromTOML (builtins.readFile (root + "/pyproject.toml"))).tool.poetry.packages;

  appTops = [
    "pyproject.toml"
    "poetry.lock"
    "README.md"
  ]
  ++ projectPackages;
in
{
  app = builtins.path {
    path = root;
    name = "mlws-app-source";
    filter = keepTop appTops;
  };
  generated = builtins.path {
    path = root;
    name = "mlws-generated-source";
    filter = keepTop (
      appTops
      ++ [
        "spec"
        "modules"
        "flavors"
      ]
    );
  };
}
