"""The exception type for bad data sets, episode files and runs."""


class ReproduceError(ValueError):
    """Bad input to the evaluation pipeline; the message names the file or item and what was expected."""
