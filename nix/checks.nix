# nix/checks.nix: the flake checks (`nix flake check`), as plain functions of one flavor.
#
# Checks are parameterised over flavors, and a flavor that extends another must also pass its
# parent's checks: the commands of every manifest up the `extends` chain have to resolve in the
# child's packages (a child may add tools, never lose its parent's).
#
# Arguments (an attribute set):
#   pkgs     nixpkgs package set of the system (runCommand comes from it).
#   mlwsApp  the `mlws` application (nix/app.nix).
#
# Returns:
#   generateCheck  src -> derivation running `mlws generate --root <src> --check`: fails when the
#                  committed modules/ and flavors/ differ from what the spec generates.
#   commandsCheck  { name, manifest, systemPackages, pythonEnv } -> derivation that fails unless
#                  the first word (the program) of every process command in `manifest` is an
#                  executable on the PATH made of systemPackages, pythonEnv and mlwsApp (the
#                  image's PATH, /bin, minus /home/workspace/.local/bin). Programs given as a
#                  runtime placeholder path ("{tool_dir}/run") are skipped.
{ pkgs, mlwsApp }:
{
  generateCheck =
    src:
    pkgs.runCommand "mlws-generate-check" { nativeBuildInputs = [ mlwsApp ]; } ''
      mlws generate --root ${src} --check
      touch $out
    '';

  commandsCheck =
    {
      name,
      manifest,
      systemPackages,
      pythonEnv,
    }:
    pkgs.runCommand "mlws-commands-${name}"
      {
        nativeBuildInputs = [ pythonEnv ];
        searchPath = builtins.concatStringsSep ":" (
          map (drv: "${drv}/bin") (
            systemPackages
            ++ [
              pythonEnv
              mlwsApp
            ]
          )
        );
      }
      ''
        python3 - ${manifest} <<'PY'
        import json, os, shutil, sys

        manifest = json.load(open(sys.argv[1]))
        missing = []
        for tool in manifest["tools"]:
            for process in tool["processes"]:
                program = process["command"][0]
                if "{" in program:  # a runtime placeholder path such as {tool_dir}/x: not on PATH
                    continue
                if shutil.which(program, path=os.environ["searchPath"]) is None:
                    missing.append(f'{tool["name"]}/{process["name"]}: {program}')
        if missing:
            sys.exit("programs not found in the flavor's packages:\n  " + "\n  ".join(missing))
        PY
        touch $out
      '';
}
