"""The one error type meant for users: its message is a single line, printed without a traceback."""


class InputError(ValueError):
    """Bad input (data, path or option). The CLI prints the message and exits with status 2."""


class TrainingDiverged(RuntimeError):
    """A loss term became NaN or infinite; raised before the weights are updated with it."""
