"""The one error type of the pipeline: a bad input the user can fix (the CLI exits 2 with it)."""


class PipelineError(Exception):
    """A clear, complete message: which file or value, what was expected, what was found."""
