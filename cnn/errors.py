"""Errors caused by the user's input: the CLIs print them as one line and exit non-zero (no traceback)."""


class UserError(Exception):
    """Something the user gave (a config value, a path, a checkpoint) is not what was expected."""


class Interrupted(UserError):
    """The user stopped the run (Ctrl-C): no failure of the run. The CLIs exit with status 130 (128 + SIGINT), not a
    user error's 2, so that a sweep tells it from a real failure and runs the trial again."""


class ConfigError(UserError, ValueError):
    """A config key or value is invalid."""


class NonFiniteLossError(UserError):
    """Training produced a NaN or Inf loss, gradient or parameter; raised before anything non-finite is saved."""

    def __init__(self, step: int, value: float, what: str = "loss is"):
        super().__init__(f"{what} {value} at step {step}; training stopped (the last checkpoint is intact)")
        self.step = step


class InputShapeError(UserError, ValueError):
    """A model was given an input it cannot take (a volume to a 2D model, a clip shorter than its receptive field):
    the data or the model of the config is the wrong one. A ``ValueError`` too, for code that applies models."""
