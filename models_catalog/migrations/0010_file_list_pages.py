"""My files at any size: an index per keyset sort order (selectors.file_list_page) with the model
sort's key stored on the row (filled here for existing matches), the folder filter's path range,
UPPER() indexes for the case-insensitive type and base-model filters, the analysis stage's progress
field, and (PostgreSQL only) trigram indexes for the name/path search, built and dropped the way
0007 does it for the catalog search."""
import importlib

from django.conf import settings
from django.db import migrations, models
from django.db.models.functions import Upper

_catalog_search = importlib.import_module("models_catalog.migrations.0007_search_trigram_indexes")
INDEXES = {
    "local_file_name_trgm": ("models_catalog_localfile", 'UPPER(("name")::text)'),
    "local_file_path_trgm": ("models_catalog_localfile", 'UPPER(("path")::text)'),
}
# Match.STRENGTH as it stands here: a migration must not follow later changes of the app's code.
STRENGTH = {"exact": 0, "renamed": 0, "same-weights": 1, "converted": 2, "precision": 3, "partial": 4, "short-hash": 5}


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


def fill_best_model_names(apps, schema_editor):
    """Each matched file's best match model name (identity.best_match's order: strength, Civitai first, oldest)."""
    Match = apps.get_model("models_catalog", "Match")
    LocalFile = apps.get_model("models_catalog", "LocalFile")
    best: dict[int, tuple[tuple, str]] = {}
    rows = Match.objects.values_list("local_file_id", "kind", "source_file__version__model__source",
                                     "source_file__version__model__name", "pk")
    for local_file_id, kind, source, name, pk in rows.iterator(chunk_size=5000):
        key = (STRENGTH.get(kind, 9), source != "civitai", pk)
        if local_file_id not in best or key < best[local_file_id][0]:
            best[local_file_id] = (key, name)
    LocalFile.objects.bulk_update([LocalFile(pk=pk, best_model_name=name[:500]) for pk, (_, name) in best.items()],
                                  ["best_model_name"], batch_size=1000)


class Migration(migrations.Migration):

    dependencies = [
        ('models_catalog', '0009_hashed_api_tokens'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='localfile',
            name='analysed_bytes',
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='localfile',
            name='best_model_name',
            field=models.CharField(blank=True, default='', max_length=500),
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
            index=models.Index(fields=['owner', 'best_model_name', 'id'], name='local_file_owner_model_id'),
        ),
        migrations.AddIndex(
            model_name='localfile',
            index=models.Index(fields=['owner', 'path'], name='local_file_owner_path'),
        ),
        migrations.AddIndex(
            model_name='sourcemodel',
            index=models.Index(Upper('type'), name='source_model_type_upper'),
        ),
        migrations.AddIndex(
            model_name='sourceversion',
            index=models.Index(Upper('base_model'), name='source_version_base_upper'),
        ),
        migrations.RunPython(fill_best_model_names, migrations.RunPython.noop),
        migrations.RunPython(create_trigram_indexes, drop_trigram_indexes),
    ]
