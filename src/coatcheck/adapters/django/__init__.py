"""Django sessions backed by coatcheck: `SESSION_ENGINE = "coatcheck.adapters.django"`.

```python
SESSION_ENGINE = "coatcheck.adapters.django"
COATCHECK = {"store": "redis://localhost:6379/0"}   # or sqlite:///..., postgresql://...
INSTALLED_APPS = [..., "coatcheck.adapters.django"]  # for `manage.py coatcheck_sessions`
MIDDLEWARE = [..., "coatcheck.adapters.django.SessionMiddleware", ...]  # optional: IP and
                                        # user agent in listings; replaces Django's own
```

See `coatcheck.adapters.django.store` for what changes under Django's API (nothing a
view can see) and `coatcheck.adapters.django.config` for the settings.
"""

from __future__ import annotations

from .config import get_manager
from .middleware import SessionMiddleware, request_info
from .store import ConflictError, SessionStore

__all__ = ["ConflictError", "SessionMiddleware", "SessionStore", "get_manager", "request_info"]
