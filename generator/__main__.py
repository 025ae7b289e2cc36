"""`python -m generator` is the same as the `mlws` command."""

from .cli import main

main(prog_name="mlws")
