# nix/programs.nix: only the programs of a package, for an image.
#
# Some packages put a whole distribution at the top of their output: nixpkgs' spark does
# `mv * $out/` (pkgs/applications/networking/cluster/spark/default.nix), so its README, jars/,
# python/, R/ ... would be linked into the image's `/` by dockerTools. The package base marks
# such packages `image = "programs"`; the generator lists them in a flavor's `programsOnly`
# with the programs the flavor's Python environment installs itself (`except`: pyspark's
# bin/pyspark), and this links just the rest of their bin/ into a small package of its own. The
# links point into the package, whose store path (and everything the programs need) the image
# then holds as a dependency, not at its top.
#
# Arguments: pkgs (runCommand comes from it), then an attribute set:
#   package  the package whose bin/ programs the image gets (spark).
#   except   names of programs to leave out (the flavor's Python environment installs them).
#
# Returns a derivation with bin/<program> symlinks.
pkgs:
{ package, except }:
let
  skipped = builtins.concatStringsSep " " except;
in
pkgs.runCommand "${package.pname or package.name}-programs" { } ''
  mkdir -p $out/bin
  for program in ${package}/bin/*; do
    name=''${program##*/}
    case " ${skipped} " in
      *" $name "*) ;;
      *) ln -s "$program" "$out/bin/$name" ;;
    esac
  done
''
