"""Exceptions that afiqa raises for problems a user can fix."""


class AfiqaError(Exception):
    """Base class: the message is one sentence meant for a person."""


class ImageError(AfiqaError, ValueError):
    """An input that is not an image afiqa can score (unreadable, empty, too small...)."""


class WeightsError(AfiqaError, RuntimeError):
    """Weights that could not be found, downloaded or verified."""


class UnknownNameError(AfiqaError, KeyError):
    """A name (backbone, model) that is not in its table."""

    def __str__(self) -> str:  # KeyError quotes its message; a person wants plain text
        return str(self.args[0]) if self.args else ""
