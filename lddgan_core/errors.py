"""Exceptions raised by lddgan_core. All are ValueError subclasses so callers that only
know ValueError still catch them."""


class LDDGANError(ValueError):
    """Base class: bad input, bad file, or a config that does not fit."""


class CheckpointError(LDDGANError):
    """A checkpoint file is unreadable, of the wrong kind, or does not match the config."""


class ConfigError(LDDGANError):
    """A configuration is incomplete, inconsistent, or names unknown fields."""


class InputError(LDDGANError):
    """A tensor argument has the wrong shape, dtype or range."""


class NonFiniteError(LDDGANError):
    """Weights, a schedule or an output hold NaN or infinite values (they would give black images)."""
