"""Trigram indexes for the catalog text search, on PostgreSQL only.

Django compiles `name__icontains=x` on PostgreSQL to `UPPER("name"::text) LIKE UPPER('%x%')`
and `trained_words__icontains=x` to `UPPER("trained_words"::text) LIKE UPPER('%"x"%')`-like
patterns: a GIN index over that same expression with gin_trgm_ops serves both without a
sequential scan. SQLite keeps its plain LIKE. If pg_trgm cannot be created (no privilege),
the migration logs it and succeeds without the indexes: search stays correct, only slower.
"""
import logging

from django.db import DatabaseError, migrations, transaction

log = logging.getLogger(__name__)

INDEXES = {
    "source_model_name_trgm": ("models_catalog_sourcemodel", 'UPPER(("name")::text)'),
    "source_version_words_trgm": ("models_catalog_sourceversion", 'UPPER(("trained_words")::text)'),
}


def _execute_or_log(connection, sql: str, what: str) -> bool:
    try:
        with transaction.atomic(using=connection.alias):  # a savepoint: a failure must not abort the migration
            with connection.cursor() as cursor:
                cursor.execute(sql)
        return True
    except DatabaseError as exc:
        log.warning("catalog search: could not %s, search will scan instead (%s)", what, str(exc).strip())
        return False


def create_trigram_indexes(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    if not _execute_or_log(connection, "CREATE EXTENSION IF NOT EXISTS pg_trgm", "create the pg_trgm extension"):
        return
    for name, (table, expression) in INDEXES.items():
        _execute_or_log(connection, f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" USING gin ({expression} gin_trgm_ops)',
                        f"create the index {name}")


def drop_trigram_indexes(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for name in INDEXES:
            cursor.execute(f'DROP INDEX IF EXISTS "{name}"')


class Migration(migrations.Migration):

    dependencies = [
        ("models_catalog", "0006_local_components"),
    ]

    operations = [
        migrations.RunPython(create_trigram_indexes, drop_trigram_indexes),
    ]
