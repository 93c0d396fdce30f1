"""My files at any size: an index per keyset sort order (selectors.file_list_page), the folder
filter's path range, the analysis stage's progress field, and (PostgreSQL only) trigram indexes for
the name/path search, built and dropped the way 0007 does it for the catalog search."""
import importlib

from django.conf import settings
from django.db import migrations, models

_catalog_search = importlib.import_module("models_catalog.migrations.0007_search_trigram_indexes")
INDEXES = {
    "local_file_name_trgm": ("models_catalog_localfile", 'UPPER(("name")::text)'),
    "local_file_path_trgm": ("models_catalog_localfile", 'UPPER(("path")::text)'),
}


def create_trigram_indexes(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    if not _catalog_search._execute_or_log(connection, "CREATE EXTENSION IF NOT EXISTS pg_trgm",
                                           "create the pg_trgm extension"):
        return
    for name, (table, expression) in INDEXES.items():
        _catalog_search._execute_or_log(
            connection, f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" USING gin ({expression} gin_trgm_ops)',
            f"create the index {name}")


def drop_trigram_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for name in INDEXES:
            cursor.execute(f'DROP INDEX IF EXISTS "{name}"')


class Migration(migrations.Migration):

    dependencies = [
        ('models_catalog', '0007_search_trigram_indexes'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='localfile',
            name='analysed_bytes',
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddIndex(
            model_name='localfile',
            index=models.Index(fields=['owner', 'id'], name='local_file_owner_id'),
        ),
        migrations.AddIndex(
            model_name='localfile',
            index=models.Index(fields=['owner', 'name', 'id'], name='local_file_owner_name_id'),
        ),
        migrations.AddIndex(
            model_name='localfile',
            index=models.Index(fields=['owner', 'size', 'id'], name='local_file_owner_size_id'),
        ),
        migrations.AddIndex(
            model_name='localfile',
            index=models.Index(fields=['owner', 'path'], name='local_file_owner_path'),
        ),
        migrations.RunPython(create_trigram_indexes, drop_trigram_indexes),
    ]
