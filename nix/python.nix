# nix/python.nix: the Python environment of one flavor.
#
# One interpreter with every Python package of the flavor, so `python`, `jupyter` and the kernels
# in the image and in the dev shell all see the same site-packages.
#
# Arguments (an attribute set):
#   pkgs            the flavor's nixpkgs package set (for the GPU flavor: nixpkgs imported with
#                   cudaSupport = true, so python3Packages.torch and everything built on it are
#                   the CUDA builds).
#   pythonPackages  ps -> list of python3Packages: the union of the flavor's and its tools'
#                   pythonPackages (nix/lib.nix `resolve` returns it).
#
# Returns `pkgs.python3.withPackages pythonPackages`.
{
  pkgs,
  pythonPackages,
}:
pkgs.python3.withPackages pythonPackages
