"""Self-validating configuration dataclasses.

Every user-facing configuration in shrinkflow (training, stage, method configs) is a dataclass that
checks its own values in ``__post_init__`` and round-trips through a plain dict, so the same object
is read from YAML, logged, diffed by DVC and rebuilt from an artifact. A bad value raises
:class:`ConfigError` naming the dotted key, the value and what was expected.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

__all__ = ["Config", "ConfigError", "check_choice", "check_range", "nested"]

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A configuration value is invalid. ``key`` is dotted (``prune.options.sparsity``)."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"{key}={value!r} is invalid: expected {expected}")

    def under(self, prefix: str) -> ConfigError:
        """The same error, with ``prefix`` prepended to the key."""
        return ConfigError(f"{prefix}.{self.key}" if prefix else self.key, self.value, self.expected)


def check_range(
    key: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> Any:
    """Return ``value`` if it is a number inside the interval, else raise ConfigError."""
    lo = "" if low is None else f"{low} {'<' if low_open else '<='} "
    hi = "" if high is None else f" {'<' if high_open else '<='} {high}"
    kind = "an integer" if integer else "a number"
    expected = f"{kind} with {lo}{key.rsplit('.', 1)[-1]}{hi}" if (lo or hi) else kind
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if (
        not is_number
        or (integer and not isinstance(value, int))
        or (isinstance(value, float) and math.isnan(value))
    ):
        raise ConfigError(key, value, expected)
    if low is not None and (value < low or (low_open and value == low)):
        raise ConfigError(key, value, expected)
    if high is not None and (value > high or (high_open and value == high)):
        raise ConfigError(key, value, expected)
    return value


def check_choice(key: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ConfigError listing them."""
    if value not in choices:
        raise ConfigError(key, value, f"one of {list(choices)}")
    return value


def nested(cls: type[C], value: Any, key: str) -> C:
    """Build a nested config from a mapping (or accept an instance), prefixing errors with ``key``."""
    if isinstance(value, cls):
        return value
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(key, value, f"a mapping of {cls.__name__} fields")
    return cls.from_dict(value, key=key)


@dataclasses.dataclass
class Config:
    """Base class: strict construction from dicts and conversion back to plain dicts."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.init]

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any] | None, key: str = "") -> C:
        """Build from ``data``; unknown keys fail with the list of known ones."""
        data = dict(data or {})
        known = cls.field_names()
        for name in data:
            if name not in known:
                raise ConfigError(name, data[name], f"one of the keys {known}").under(key)
        try:
            return cls(**data)
        except ConfigError as exc:
            raise exc.under(key) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists instead of tuples) that ``from_dict`` accepts."""

        def plain(value: Any) -> Any:
            if isinstance(value, Config):
                return value.to_dict()
            if isinstance(value, Mapping):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value

        return {name: plain(getattr(self, name)) for name in self.field_names()}
