"""Start one supervised program from a JSON file: `python -m runtime.launch <program.json>`.

The supervisor configuration only ever contains this command and runtime-made paths; the real
argv and environment live in the JSON file (mode 0600), so quotes, newlines, `%` or `;` in any
value never meet supervisor's ini syntax. Keys: argv (list, argv[0] an absolute path), env (the
complete environment), cwd, umask (int or null).
"""
from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    if spec.get("umask") is not None:
        os.umask(int(spec["umask"]))
    if spec.get("cwd"):
        os.chdir(spec["cwd"])
    os.execve(spec["argv"][0], spec["argv"], spec["env"])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
