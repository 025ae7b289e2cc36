# nix/job-image.nix: an image that runs baked-in code as a job (EXECUTE_CODE) instead of the
# workspace, with the job's Python packages from nixpkgs, pinned by the flake's lock like the rest.
#
# The image is a flavor's workspace image (nix/image.nix: same user, entrypoint `mlws start`, work
# folder /workspace) with three differences: the Python environment holds the flavor's packages
# plus the job's, EXECUTE_CODE names the job's code in the Nix store, and MLWS_JOB_MODE is
# `code-only` by default, so nothing is installed at run time (setup.sh and requirements.txt in
# the code's folder are not run: the packages are already in the image). `docker run IMAGE` runs
# the job from /workspace and exits with its exit code (docs/runtime.md, "Jobs").
#
# Users call it through the flake: `mlws.lib.mkJobImage { system; flavor; name; code; ... }`
# (flake.nix passes the first argument set for the chosen flavor), e.g. in their own flake:
#
#   packages.x86_64-linux.train = mlws.lib.mkJobImage {
#     system = "x86_64-linux";
#     flavor = "minimal";              # any flavor built for that system (default: minimal)
#     name = "train";
#     code = ./train;                  # a folder with __main__.py, or one script
#     pythonPackages = ps: [ ps.tqdm ];
#   };
#
# First argument set, the workspace image's pieces (what flake.nix gives nix/image.nix):
#   pkgs            the flavor's nixpkgs package set.
#   flavor          the flavor file's contents (flavors/<flavor>.nix).
#   pythonPackages  ps -> list of python3Packages: the flavor's own (nix/lib.nix `resolve`).
#   systemPackages, packageEnv, mlwsApp, version, revision, created, source, licenses:
#                   as documented in nix/image.nix, passed on unchanged. Any pythonEnv given is
#                   replaced by the combined one.
#
# Second argument set, the job:
#   name            image name (and org.opencontainers.image.title); the tag is the project version.
#   code            a path (copied into the Nix store) or a derivation: a folder with __main__.py,
#                   or a single .py/.sh/executable file (in a folder of its own: the runner looks
#                   for install files beside it when MLWS_JOB_MODE is `all`).
#   pythonPackages  ps -> list of python3Packages the job needs (default: none), added to the
#                   flavor's in one `python3.withPackages`, duplicates dropped (lib.unique).
#   mode            MLWS_JOB_MODE: "code-only" (default), "all" (also run setup.sh and pip install
#                   requirements.txt at every start, unpinned) or "requirements-only".
#   env             extra environment variables of the image (default { }); they cannot replace
#                   EXECUTE_CODE, MLWS_JOB_MODE or what nix/image.nix fixes.
#   description     org.opencontainers.image.description (default: "<name>: a job on <flavor image>").
#
# Returns the image derivation (a docker-archive tarball: `docker load < result`).
#
# nixpkgs read for this (NixOS/nixpkgs):
#   pkgs/build-support/docker/default.nix (commit 34b7a306c35b279929eebbdb43af071fd92d0d4b):
#     streamLayeredImage, which buildLayeredImage wraps, takes its closure from
#     `closureRoots = [ baseJson customisationLayer ]` where baseJson is the JSON of `config`:
#     a store path named in config.Env (EXECUTE_CODE here) is therefore copied into the image.
#   pkgs/development/interpreters/python/with-packages.nix (commit 14fd976016aee7e8a52f362b145a16947e111515):
#     `python3.withPackages f` is buildEnv over `f pythonPackages`, so one function listing the
#     flavor's and the job's packages gives one environment.
#   lib/lists.nix (commit 45e8de9a7d457e5202d17fcbf4a6c58afa3388e8): `unique` keeps the first
#     occurrence of each element.
workspace:
{
  name,
  code,
  pythonPackages ? (ps: [ ]),
  mode ? "code-only",
  env ? { },
  description ? null,
}:
let
  inherit (workspace) pkgs flavor;
  jobPythonPackages = pythonPackages;
  modes = [
    "code-only"
    "all"
    "requirements-only"
  ];
  pythonEnv = pkgs.python3.withPackages (ps: pkgs.lib.unique (workspace.pythonPackages ps ++ jobPythonPackages ps));
  jobFlavor = flavor // {
    imageName = name;
    description = if description != null then description else "${name}: a job on ${flavor.imageName}";
    env = flavor.env // env // {
      EXECUTE_CODE = "${code}";
      MLWS_JOB_MODE = mode;
    };
  };
in
if !(builtins.elem mode modes) then
  throw "mlws.lib.mkJobImage: mode = ${builtins.toJSON mode}: expected one of ${builtins.toJSON modes}"
else if !(builtins.isFunction jobPythonPackages) then
  throw "mlws.lib.mkJobImage: pythonPackages must be a function (ps: [ ps.tqdm ]), got a ${builtins.typeOf jobPythonPackages}"
else
  import ./image.nix (
    builtins.removeAttrs workspace [ "pythonPackages" ]
    // {
      inherit pythonEnv;
      flavor = jobFlavor;
    }
  )
