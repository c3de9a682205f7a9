"""The one speed trick on value types, contained: a NamedTuple built without its `__new__`.

A NamedTuple's own `__new__` is a Python function, one call more than `tuple.__new__`;
on the request path, where a few of them are built per request, that is measurable
(BENCHMARKS.md). Each type that needs it gets one fast constructor, declared beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MethodType
from typing import Any, TypeVar

__all__ = ["fast_constructor"]

_T = TypeVar("_T", bound=tuple[Any, ...])


def fast_constructor(cls: type[_T], *fields: str) -> Callable[[tuple[Any, ...]], _T]:
    """`cls` built from a tuple of every field, in the order `fields` names them: a
    NamedTuple's own `__new__` is one Python call more, on the request path. `fields` is
    checked against `cls._fields` here, at import, so a field added to `cls` breaks the
    import (until its fast constructor and callers are updated) instead of silently
    shifting every later value. The one place such a trick lives, one per type."""
    if fields != getattr(cls, "_fields", None):
        raise TypeError(f"fast constructor of {cls.__name__} lists {fields}, not its fields")
    return MethodType(tuple.__new__, cls)  # as cheap to call as tuple.__new__ itself
