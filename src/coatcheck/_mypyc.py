"""`mypyc_attr` for the modules mypyc compiles, without making `mypy_extensions` a
dependency: at build time mypyc reads the decorator (mypy resolves this name to
`mypy_extensions.mypyc_attr`); at run time, where `mypy_extensions` may be missing, it is a
decorator that changes nothing. Not compiled itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["mypyc_attr"]

if TYPE_CHECKING:
    from mypy_extensions import mypyc_attr as mypyc_attr
else:
    try:
        from mypy_extensions import mypyc_attr
    except ImportError:

        def mypyc_attr(*attrs: str, **kwattrs: Any) -> Any:
            return lambda cls: cls
