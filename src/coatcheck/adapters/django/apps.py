"""The Django application of coatcheck: list it in `INSTALLED_APPS` for the table of the
default store (`manage.py migrate`), the system checks of `COATCHECK` (`manage.py check`)
and the `coatcheck_sessions` management command."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["CoatcheckConfig"]


class CoatcheckConfig(AppConfig):
    name = "coatcheck.adapters.django"
    label = "coatcheck"
    verbose_name = "coatcheck sessions"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)
