"""One configuration key: its type, its default and the values it accepts, checked and never coerced.

A key is declared once, on the settings field it fills (``newsletter.settings``), with ``setting(...)``;
``keys_of`` reads those declarations back as ``Key``s for the reader (``newsletter.config``) and for the
commented file ``newsletter init`` writes (``newsletter.default_config``).
"""

from __future__ import annotations

import difflib
import math
import types
from collections.abc import Iterable
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True, slots=True)
class Key:
    """``type`` is str, int, float (integers accepted), bool, or tuple for a list of strings
    (a single string is accepted as a list of one). Limits are inclusive."""

    type: type
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False  # `newsletter init` writes it commented out: unset unless given
    field_name: str = ""  # the settings field it fills (not always named like the key)
    comment: tuple[str, ...] = ()  # the lines `newsletter init` writes above it
    example: Any = None  # what `newsletter init` shows, commented out, for an optional key

    def check(self, value: Any) -> Any:
        """``value`` as read from TOML, returned as the setting's type; ValueError says what is wrong."""
        if self.type is bool:
            if not isinstance(value, bool):
                raise ValueError(f"must be true or false, not {_shown(value)}")
            return value
        if self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"must be a whole number, not {_shown(value)}")
            return self._within_limits(value)
        if self.type is float:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"must be a number, not {_shown(value)}")
            return float(self._within_limits(value))
        if self.type is tuple:
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(
                isinstance(item, str) and item.strip() for item in items
            ):
                raise ValueError(f"must be a list of strings, not {_shown(value)}")
            return tuple(item.strip() for item in items)
        if not isinstance(value, str):  # the value may be a secret: say only what kind of thing it is
            raise ValueError(f"must be a string (in quotes), not {_kind(value)}")
        if self.choices and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}, not {value!r}")
        return value

    def parse(self, text: str) -> Any:
        """An environment variable's text, returned as the setting's type."""
        if self.type is bool:
            word = text.strip().lower()
            if word in _TRUE or word in _FALSE:
                return word in _TRUE
            raise ValueError(f"must be true or false (or 1/0, yes/no, on/off), not {text!r}")
        if self.type in (int, float):
            try:
                number = self.type(text.strip())  # int("2.5") fails: a number is never rounded
            except ValueError:
                kind = "a whole number" if self.type is int else "a number"
                raise ValueError(f"must be {kind}, not {text!r}") from None
            return self.check(number)
        if self.type is tuple:
            raise ValueError("is a list and cannot be set from the environment")
        return self.check(text)

    def _within_limits(self, value: float) -> float:
        low, high = self.minimum, self.maximum
        if low is not None and high is not None and not low <= value <= high:
            raise ValueError(f"must be between {_number(low)} and {_number(high)}, not {value!r}")
        if low is not None and value < low:
            raise ValueError(f"must be at least {_number(low)}, not {value!r}")
        if high is not None and value > high:
            raise ValueError(f"must be at most {_number(high)}, not {value!r}")
        return value


class SettingError(ValueError):
    """A value its key accepts that its table's rules refuse; ``key`` is where the message points."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class _Declared:
    key: str | None
    in_file: Any
    minimum: float | None
    maximum: float | None
    choices: tuple[str, ...]
    comment: tuple[str, ...]
    example: Any


_DECLARED = "newsletter.config_keys"


def setting(
    default: Any = MISSING,
    *comment: str,
    key: str | None = None,
    in_file: Any = MISSING,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] = (),
    example: Any = MISSING,
) -> Any:
    """A settings field that is a key of the configuration file, named like the field unless ``key`` says.

    ``default`` is the field's default, and the key's unless ``in_file`` gives the value that stands for it
    in the file (``topics = 0`` for "chosen from the data"); a path is written as text. ``comment`` holds
    the lines written above the key. With an ``example`` the key is optional: written commented out with
    that value, unset unless given. The key's type is the field's annotation (``X | None`` counts as ``X``)."""
    declared = _Declared(key, in_file, minimum, maximum, choices, comment, example)
    if default is MISSING:
        return field(metadata={_DECLARED: declared})
    return field(default=default, metadata={_DECLARED: declared})


def keys_of(cls: type) -> dict[str, Key]:
    """The keys declared by the fields of the dataclass ``cls``, in field order, by their name in the file."""
    hints = get_type_hints(cls)
    keys: dict[str, Key] = {}
    for declared_field in fields(cls):
        declared = declared_field.metadata.get(_DECLARED)
        if declared is None:
            continue
        name = declared.key or declared_field.name
        keys[name] = Key(
            _file_type(hints[declared_field.name]),
            _file_default(declared_field, declared),
            minimum=declared.minimum,
            maximum=declared.maximum,
            choices=declared.choices,
            optional=declared.example is not MISSING,
            field_name=declared_field.name,
            comment=declared.comment,
            example=None if declared.example is MISSING else declared.example,
        )
    return keys


def _file_type(hint: Any) -> type:
    if isinstance(hint, types.UnionType):
        (hint,) = (arg for arg in get_args(hint) if arg is not type(None))
    if hint is Path:
        return str
    if get_origin(hint) is tuple:
        return tuple
    if hint in (str, int, float, bool):
        return hint
    raise TypeError(f"a configuration key cannot hold a {hint}")


def _file_default(declared_field: Field[Any], declared: _Declared) -> Any:
    value = declared_field.default if declared.in_file is MISSING else declared.in_file
    if value is MISSING:
        return None
    return str(value) if isinstance(value, Path) else value


def closest(name: str, known: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The known name ``name`` was probably meant to be, if one is close enough (difflib's ratio)."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=cutoff)
    return matches[0] if matches else None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return repr(value)
    return _kind(value)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, str):
        return "a string"
    return "a date or time"
