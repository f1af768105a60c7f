"""Typed configs from user mappings (a YAML file's sections): :func:`from_mapping` builds a config
dataclass, nested ones included, and refuses an unknown field (naming its closest known one) or a
value of the wrong type with one line that names the field by its dotted path, and the value.

Field types understood: ``bool``, ``int``, ``float`` (an integer is fine; so is ``1e-3``, which
YAML 1.1 reads as a string), ``str``, ``X | None``, ``tuple[X, ...]`` (from a list), ``dict`` (a
mapping), ``Any`` and nested dataclasses (a mapping; empty or absent: the defaults).
"""
from __future__ import annotations

import re
import types
import typing
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

from curate.core.errors import BadInputError, check_fields

T = TypeVar("T")

_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string", tuple: "a list",
             dict: "a mapping"}


def from_mapping(cls: type[T], data: Any, where: str = "config", prefix: str = "") -> T:
    """``cls`` (a dataclass) from the mapping ``data``. Errors start ``WHERE: `` and name fields as
    ``PREFIX + name`` (``train.epochs``); a :class:`BadInputError` from ``cls.__post_init__`` gets
    the section too (``WHERE: train: ...``)."""
    section = f"{where}: {prefix.rstrip('.')}" if prefix else where
    if not isinstance(data, dict):
        raise BadInputError(f"{section}: expected a mapping of fields, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls) if f.init]
    check_fields([f"{prefix}{key}" for key in data], [f"{prefix}{name}" for name in known], where)
    values = {key: _convert(value, hints[key], f"{prefix}{key}", where) for key, value in data.items()}
    try:
        return cls(**values)
    except BadInputError as err:
        raise BadInputError(f"{section}: {err}") from err


def _convert(value: Any, hint: Any, name: str, where: str) -> Any:
    """``value`` as a field of type ``hint``; else a :class:`BadInputError` naming ``name`` and the value."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]  # optional fields only: X | None
        return _convert(value, inner, name, where)
    if value is None and (is_dataclass(hint) or (origin or hint) is dict):
        value = {}  # an empty section
    if is_dataclass(hint):
        return from_mapping(hint, value, where, f"{name}.")
    if hint is Any:
        return value
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(_convert(item, args[0], f"{name}[{i}]", where) for i, item in enumerate(value))
    if (origin or hint) is dict and isinstance(value, dict):
        return dict(value)
    if hint is float and isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
        return float(value)
    if _is(value, hint):
        return float(value) if hint is float else value
    raise BadInputError(f"{where}: {name}: expected {_EXPECTED.get(origin or hint, hint)}, got {_show(value)}")


def _is(value: Any, hint: Any) -> bool:
    """``value`` is of the plain type ``hint`` (a bool is no number; an integer is a float)."""
    if isinstance(value, bool) or hint is bool:
        return isinstance(value, bool) and hint is bool
    return hint in (int, float, str) and isinstance(value, (int, float) if hint is float else hint)


def _show(value: Any) -> str:
    """A value for an error message: a scalar as written, else its type."""
    if value is None:
        return "nothing"
    return repr(value) if isinstance(value, (str, int, float)) else type(value).__name__
