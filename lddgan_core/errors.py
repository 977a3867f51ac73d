"""Exceptions raised by lddgan_core. All are ValueError subclasses so callers that only
know ValueError still catch them."""


class LDDGANError(ValueError):
    """Base class: bad input, bad file, or a config that does not fit."""


class CheckpointError(LDDGANError):
    """A checkpoint file is unreadable, of the wrong kind, or does not match the config."""


class ConfigError(LDDGANError):
    """A configuration is incomplete, inconsistent, or names unknown fields."""


class FieldError(ConfigError):
    """One field of a config holds a value it cannot take. ``field`` names it and ``reason`` says why (the
    message is "<config>.<field>: <reason>"), so that an edge can name the input the value came from."""

    def __init__(self, config: str, field: str, reason: str):
        super().__init__(f"{config}.{field}: {reason}")
        self.field, self.reason = field, reason


class InputError(LDDGANError):
    """A tensor argument has the wrong shape, dtype or range."""


class NonFiniteError(LDDGANError):
    """Weights, a schedule or an output hold NaN or infinite values (they would give black images)."""
