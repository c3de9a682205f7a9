"""The table of `coatcheck.stores.django.DjangoStore`, as a model so that Django's
migrations create it (`manage.py migrate`) on every database the project uses.

The store reads and writes it with its own statements (a compare-and-set on `version`
that the ORM's `save()` cannot express); the model is its schema, not its API. Nothing of
a session's secret is in it: `key` is the session's public handle, `data` coatcheck's
JSON record.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from ...stores.django import TABLE

__all__ = ["SessionRecord"]


class SessionRecord(models.Model):
    key: models.CharField[str, str] = models.CharField(max_length=255, primary_key=True)
    data: models.BinaryField[Any, Any] = models.BinaryField()
    version: models.BigIntegerField[int, int] = models.BigIntegerField()
    #: Unix time, seconds (the app server's clock, as every coatcheck store).
    expires_at: models.FloatField[float, float] = models.FloatField(db_index=True)
    user_id: models.CharField[str | None, str | None] = models.CharField(
        max_length=255, null=True, db_index=True
    )

    class Meta:
        db_table = TABLE
        verbose_name = "coatcheck session record"

    def __str__(self) -> str:
        return f"session record {self.key[:8]}..."
