"""ApiToken (keys stored as SHA-256), and DRF authtoken's clear-text keys hashed into it.

Existing keys keep working: each `authtoken_token` row becomes an ApiToken with
the SHA-256 of its key, then the clear-text row is deleted. The old table is
read with plain SQL, because `rest_framework.authtoken` is no longer an
installed app; on a new install it never existed and there is nothing to do.
The emptied table is left in place (dropping another app's table is its own
migrations' job); it holds nothing.
"""
import hashlib
from datetime import datetime, timezone

from django.conf import settings
from django.db import migrations, models
import django.db.models.deletion

OLD_TABLE = "authtoken_token"


def hash_drf_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if OLD_TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("models_catalog", "ApiToken")
    q = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {q('key')}, {q('user_id')}, {q('created')} FROM {q(OLD_TABLE)}")
        rows = cursor.fetchall()
    for key, user_id, created in rows:
        if isinstance(created, str):  # SQLite hands raw SQL its text: UTC, without an offset
            created = datetime.fromisoformat(created)
        if created is not None and created.tzinfo is None:
            created = created.replace(tzinfo=timezone.utc)
        token = ApiToken.objects.create(user_id=user_id, name="made before tokens were hashed", prefix=key[:8],
                                        digest=hashlib.sha256(key.encode()).hexdigest())
        ApiToken.objects.filter(pk=token.pk).update(created_at=created)  # auto_now_add ignores a given value
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {q(OLD_TABLE)}")


class Migration(migrations.Migration):

    dependencies = [
        ("models_catalog", "0008_model_roots"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ApiToken",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(blank=True, default="", max_length=100)),
                ("prefix", models.CharField(max_length=16)),
                ("digest", models.CharField(max_length=64, unique=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("last_used_at", models.DateTimeField(blank=True, null=True)),
                ("user", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="api_tokens", to=settings.AUTH_USER_MODEL)),
            ],
            options={"ordering": ["-created_at", "-id"]},
        ),
        # Not reversible into clear text: going back leaves the old table empty (tokens must be made again).
        migrations.RunPython(hash_drf_tokens, migrations.RunPython.noop),
    ]
