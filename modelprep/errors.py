"""The one exception type the CLIs turn into a single-line message (never a traceback)."""


class ModelPrepError(Exception):
    """A problem the user can fix; str(error) is one sentence saying what to do."""
