"""The Django application of coatcheck: list it in `INSTALLED_APPS` for the
`coatcheck_sessions` management command (the session engine itself needs no app)."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["CoatcheckConfig"]


class CoatcheckConfig(AppConfig):
    name = "coatcheck.adapters.django"
    label = "coatcheck"
    verbose_name = "coatcheck sessions"
