"""Django sessions backed by coatcheck: `SESSION_ENGINE = "coatcheck.adapters.django"`.

```python
SESSION_ENGINE = "coatcheck.adapters.django"
COATCHECK = {"store": "django"}   # the default: the project's database; or redis://...
INSTALLED_APPS = [..., "coatcheck.adapters.django"]  # its table (`manage.py migrate`),
                                        # the COATCHECK checks, `coatcheck_sessions`
MIDDLEWARE = [..., "coatcheck.adapters.django.SessionMiddleware", ...]  # optional: IP and
                                        # user agent in listings; replaces Django's own
```

See `coatcheck.adapters.django.store` for what changes under Django's API (nothing a
view can see), `config` for the settings, `checks` for what `manage.py check` validates,
and `importing` for carrying the previous engine's sessions over (`import_from`).
"""

from __future__ import annotations

from .._extras import missing_extra

try:
    import django  # noqa: F401 - imported here to name the extra if it is missing
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "django", "django") from None

from .config import get_manager
from .decorators import no_session
from .middleware import SessionMiddleware, request_info
from .store import ConflictError, SessionStore

__all__ = [
    "ConflictError",
    "SessionMiddleware",
    "SessionStore",
    "get_manager",
    "no_session",
    "request_info",
]
