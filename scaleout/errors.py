"""Errors the command line reports as a one-line message and a non-zero exit."""


class ScaleoutError(Exception):
    """Base for errors caused by the user's input or settings, not by a bug."""


class DataError(ScaleoutError, ValueError):
    """Input data is missing or malformed; the message names file, line and field."""


class ArtifactError(ScaleoutError):
    """A prepared dataset, model or export is missing, incomplete or mismatched."""


class ConfigError(ScaleoutError, ValueError):
    """A setting is out of range or names something unknown."""


class TrainingDiverged(ScaleoutError):
    """The training loss became NaN or infinite; nothing was saved."""
