# nix/r.nix: R for a flavor that lists R packages (its `rPackages`), as one consistent set.
#
# nixpkgs' bare `R` sees no `rPackages.*` library: R only finds packages it is wrapped with
# (pkgs/development/r-modules/wrapper.nix puts them on R_LIBS_SITE). So a flavor with R packages
# gets, instead of `R` plus loose packages:
#   * `rWrapper.override { packages }`: bin/R, bin/Rscript that see exactly those packages;
#   * with IRkernel among them, a Jupyter kernelspec (share/jupyter/kernels/ir/kernel.json) whose
#     argv runs that wrapped R, and JUPYTER_PATH pointing at it: Jupyter only offers kernels whose
#     kernelspec is on its path, and this one lives in its own store path, outside the Python
#     environment's share/jupyter;
#   * RStudio Server with the same packages: a tool module lists `pkgs.rstudio-server` (the spec's
#     attribute), which is swapped for `rstudioServerWrapper.override { packages }` (its rsession
#     gets the packages through R_PROFILE_USER, because RStudio resets R_LIBS_SITE itself).
#
# Arguments (an attribute set):
#   pkgs       the flavor's nixpkgs package set (rPackages, rWrapper, rstudioServerWrapper,
#              rstudio-server, writeTextDir come from it).
#   rPackages  rp -> list of rPackages: the flavor's `rPackages` (flavors/<flavor>.nix).
#
# Returns an attribute set:
#   packages      list of derivations to add to the flavor's system packages: [ ] without R
#                 packages, else the wrapped R and (with IRkernel) the kernelspec.
#   env           environment the image and the dev shell set: { JUPYTER_PATH } with the kernel,
#                 else { }.
#   swapPackage   derivation -> derivation: rstudio-server -> the wrapper with the packages (with R
#                 packages), every other package unchanged.
#   rEnv          the wrapped R (null without R packages).
#   kernelspec    the kernelspec derivation (null without IRkernel).
{ pkgs, rPackages }:
let
  packages = rPackages pkgs.rPackages;
  hasR = packages != [ ];

  rEnv = pkgs.rWrapper.override { inherit packages; };

  # The argv of IRkernel's own kernelspec (IRkernel::installspec writes the same), with R as the
  # wrapped R's absolute path, so the kernel finds IRkernel whatever PATH Jupyter runs it with.
  hasIRkernel = hasR && pkgs.rPackages ? IRkernel && builtins.elem pkgs.rPackages.IRkernel packages;
  kernelspec = pkgs.writeTextDir "share/jupyter/kernels/ir/kernel.json" (
    builtins.toJSON {
      argv = [
        "${rEnv}/bin/R"
        "--slave"
        "-e"
        "IRkernel::main()"
        "--args"
        "{connection_file}"
      ];
      display_name = "R";
      language = "R";
    }
  );

  rstudioServer = pkgs.rstudioServerWrapper.override { inherit packages; };
in
if !hasR then
  {
    packages = [ ];
    env = { };
    swapPackage = package: package;
    rEnv = null;
    kernelspec = null;
  }
else
  {
    packages = [ rEnv ] ++ (if hasIRkernel then [ kernelspec ] else [ ]);
    env = if hasIRkernel then { JUPYTER_PATH = "${kernelspec}/share/jupyter"; } else { };
    # Derivations compare by their outPath: this matches the very rstudio-server of `pkgs`.
    swapPackage = package: if package == pkgs.rstudio-server then rstudioServer else package;
    inherit rEnv;
    kernelspec = if hasIRkernel then kernelspec else null;
  }
