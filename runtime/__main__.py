"""`python -m runtime [start|job] ...`: the runtime without the generator's `mlws` group."""
import sys

from runtime.cli import start

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["job"]:
        from runtime.jobs import job

        job(args=args[1:], prog_name="mlws job")
    if args[:1] == ["start"]:
        args = args[1:]
    start(args=args, prog_name="mlws start")
