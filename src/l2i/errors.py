"""User-facing errors: the CLI prints these as one clear message, without a traceback."""


class L2IError(Exception):
    """A problem the user can fix (bad input, bad config, missing file).

    The message names the file or key at fault and says what to do.
    """


class ConfigError(L2IError):
    """A bad configuration key or value."""


class DataError(L2IError):
    """Bad or missing data (audio files, CSV, labels, folds)."""
