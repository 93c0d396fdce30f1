"""Issue #14 (scale): owner-led search and duplicate indexes.

- FileHashes.owner: a copy of local_file.owner (filled here for existing rows), indexed with sha256 and
  folder_digest, so one owner's SHA256 groups are a range of that owner's rows; LocalFile gets
  (owner, key) indexes for the other group keys.
- PostgreSQL only: the name/path/described_words trigram indexes become GIN indexes led by owner_id
  (btree_gin), so My files' search (always `owner = me AND UPPER(x) LIKE ...`) reads only the viewer's
  entries of the trigram lists instead of every owner's. A multi-column GIN index also serves a query
  without the owner (staff, scope=all), so the single-column ones are dropped. Without the privilege for
  the extensions, the old indexes stay and search is only slower. SQLite: nothing to do.
"""
import logging

import django.db.models.deletion
from django.conf import settings
from django.db import DatabaseError, migrations, models, transaction
from django.db.models import OuterRef, Subquery

log = logging.getLogger(__name__)
TABLE = "models_catalog_localfile"
# new index -> (column expression, the single-column index it replaces)
TRIGRAM = {
    "local_file_owner_name_trgm": ('UPPER(("name")::text)', "local_file_name_trgm"),
    "local_file_owner_path_trgm": ('UPPER(("path")::text)', "local_file_path_trgm"),
    "local_file_owner_words_trgm": ('UPPER(("described_words")::text)', "local_file_described_words_trgm"),
}


def owner_led_trigram(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:  # a savepoint
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            cursor.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
            for name, (expression, old) in TRIGRAM.items():
                cursor.execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON "{TABLE}" '
                               f'USING gin ("owner_id", {expression} gin_trgm_ops)')
                cursor.execute(f'DROP INDEX IF EXISTS "{old}"')
    except DatabaseError as exc:  # no privilege for an extension: the old indexes stay, search only slower
        log.warning("My files search: could not create the owner-led trigram indexes (%s)", exc)


def single_column_trigram(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for name, (expression, old) in TRIGRAM.items():
            cursor.execute(f'CREATE INDEX IF NOT EXISTS "{old}" ON "{TABLE}" USING gin ({expression} gin_trgm_ops)')
            cursor.execute(f'DROP INDEX IF EXISTS "{name}"')


def fill_owners(apps, schema_editor):
    FileHashes = apps.get_model("models_catalog", "FileHashes")
    LocalFile = apps.get_model("models_catalog", "LocalFile")
    # One UPDATE ... SET owner_id = (SELECT owner_id ...): no rows through Python, whatever the size.
    FileHashes.objects.filter(owner__isnull=True).update(
        owner=Subquery(LocalFile.objects.filter(pk=OuterRef("local_file_id")).values("owner_id")[:1]))


class Migration(migrations.Migration):

    dependencies = [
        ('models_catalog', '0022_sha256_12'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='filehashes',
            name='owner',
            field=models.ForeignKey(db_index=False, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddIndex(
            model_name='filehashes',
            index=models.Index(condition=models.Q(('sha256', ''), _negated=True), fields=['owner', 'sha256'], name='file_hashes_owner_sha256'),
        ),
        migrations.AddIndex(
            model_name='filehashes',
            index=models.Index(condition=models.Q(('folder_digest', ''), _negated=True), fields=['owner', 'folder_digest'], name='file_hashes_owner_folder'),
        ),
        migrations.AddIndex(
            model_name='localfile',
            index=models.Index(condition=models.Q(('content_id', ''), _negated=True), fields=['owner', 'content_id'], name='local_file_owner_content_id'),
        ),
        migrations.AddIndex(
            model_name='localfile',
            index=models.Index(condition=models.Q(('precision_id', ''), _negated=True), fields=['owner', 'precision_id'], name='local_file_owner_precision_id'),
        ),
        migrations.AddIndex(
            model_name='localfile',
            index=models.Index(condition=models.Q(('bf16_id', ''), _negated=True), fields=['owner', 'bf16_id'], name='local_file_owner_bf16_id'),
        ),
        migrations.AddIndex(
            model_name='localfile',
            index=models.Index(condition=models.Q(('fp8_id', ''), _negated=True), fields=['owner', 'fp8_id'], name='local_file_owner_fp8_id'),
        ),
        migrations.RunPython(fill_owners, migrations.RunPython.noop),
        migrations.RunPython(owner_led_trigram, single_column_trigram),
    ]
