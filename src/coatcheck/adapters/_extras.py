"""Import errors that say which extra to install, for the adapters' framework imports.

An adapter imports its framework at the top, inside `try`; a `ModuleNotFoundError` there
becomes one that names the package extra (`pip install 'coatcheck[flask]'`), as the stores
do for their drivers. It stays a `ModuleNotFoundError` (an `ImportError`) with the missing
module's `name`, so code that catches either, or checks `exc.name`, keeps working.
"""

from __future__ import annotations

__all__ = ["missing_extra"]


def missing_extra(exc: ModuleNotFoundError, adapter: str, extra: str) -> ModuleNotFoundError:
    """The error to raise instead of `exc` when importing `adapter` found its framework
    missing: it names the module that is missing and the extra that installs it."""
    missing = exc.name or "a dependency"
    return ModuleNotFoundError(
        f"coatcheck.adapters.{adapter} needs {missing!r}, which is not installed: "
        f"pip install 'coatcheck[{extra}]'",
        name=exc.name,
    )
