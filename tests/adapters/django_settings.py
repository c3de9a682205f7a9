"""Settings of the tiny Django project of `test_django.py`, applied with
`settings.configure(**SETTINGS)` (no settings module on a path to guess). The tests give
it a manager per test via `COATCHECK`."""

from __future__ import annotations

from typing import Any

SETTINGS: dict[str, Any] = {
    "SECRET_KEY": "test-only-not-a-secret",
    "DEBUG": False,
    "ALLOWED_HOSTS": ["testserver"],
    "USE_TZ": True,
    "INSTALLED_APPS": [
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "django.contrib.sessions",  # for `manage.py clearsessions`
        "coatcheck.adapters.django",
    ],
    "DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    "MIDDLEWARE": [
        "coatcheck.adapters.django.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ],
    "ROOT_URLCONF": "adapters.django_app",
    "SESSION_ENGINE": "coatcheck.adapters.django",
    "PASSWORD_HASHERS": ["django.contrib.auth.hashers.MD5PasswordHasher"],
    "DEFAULT_AUTO_FIELD": "django.db.models.AutoField",
    "COATCHECK": {"store": "memory://"},
}
