"""The table of `DjangoStore` (`coatcheck.stores.django`): see `models.SessionRecord`."""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    operations = [
        migrations.CreateModel(
            name="SessionRecord",
            fields=[
                ("key", models.CharField(max_length=255, primary_key=True, serialize=False)),
                ("data", models.BinaryField()),
                ("version", models.BigIntegerField()),
                ("expires_at", models.FloatField(db_index=True)),
                ("user_id", models.CharField(db_index=True, max_length=255, null=True)),
            ],
            options={
                "verbose_name": "coatcheck session record",
                "db_table": "coatcheck_session",
            },
        ),
    ]
