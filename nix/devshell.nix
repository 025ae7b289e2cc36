# nix/devshell.nix: the dev shell of one flavor (`nix develop .#<flavor>`).
#
# It carries exactly the image's packages and Python environment, so a tool that works in
# `nix develop .#full` works in the ml-workspace image, and exports MLWS_MANIFEST so `mlws start`
# in the shell runs the flavor's tools.
#
# Arguments (an attribute set):
#   pkgs            the flavor's nixpkgs package set (mkShell comes from it).
#   flavor          one flavor file's contents (flavors/<flavor>.nix): name, env, manifest are read.
#   systemPackages  the same list nix/image.nix puts in the image.
#   pythonEnv       the same Python environment the image has (nix/python.nix).
#   packageEnv      the same package environment the image sets (JUPYTER_PATH for the R kernel).
#   mlwsApp         the `mlws` application (nix/app.nix).
#
# Returns a pkgs.mkShell derivation.
{
  pkgs,
  flavor,
  systemPackages,
  pythonEnv,
  packageEnv,
  mlwsApp,
}:
let
  # The packages' environment, the flavor's image environment, then MLWS_MANIFEST (the image's
  # order), exported by the shell hook. Values are single-quoted for the shell ('\'' closes,
  # escapes and reopens the quote).
  #
  # LD_LIBRARY_PATH is left out: in the image it only reaches the driver libraries the NVIDIA
  # container toolkit injects, but on a host the same folders (/usr/lib/x86_64-linux-gnu, ...) hold
  # the whole distribution, whose libraries would shadow Nix's in every program of the shell.
  # Nix's CUDA programs find a NixOS host's driver through /run/opengl-driver/lib anyway.
  quote = value: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] value + "'";
  exports = packageEnv // builtins.removeAttrs flavor.env [ "LD_LIBRARY_PATH" ] // {
    MLWS_MANIFEST = "${flavor.manifest}";
  };
in
pkgs.mkShell {
  name = "mlws-${flavor.name}";
  packages = systemPackages ++ [
    pythonEnv
    mlwsApp
  ];
  shellHook = builtins.concatStringsSep "\n" (
    map (name: "export ${name}=${quote exports.${name}}") (builtins.attrNames exports)
  );
}
