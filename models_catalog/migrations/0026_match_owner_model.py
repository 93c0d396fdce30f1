"""Issue #14 (scale): Match copies its file's owner and its source file's model (see Match.owner / .model).

Added nullable, filled from the rows they copy (a correlated UPDATE every backend runs), then made NOT NULL:
a writer that forgot them fails loudly instead of hiding a match from the searches that read them.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

BACKFILL = """
UPDATE models_catalog_match SET
  owner_id = (SELECT f.owner_id FROM models_catalog_localfile f WHERE f.id = models_catalog_match.local_file_id),
  model_id = (SELECT v.model_id FROM models_catalog_sourcefile s
              JOIN models_catalog_sourceversion v ON v.id = s.version_id
              WHERE s.id = models_catalog_match.source_file_id)
"""


class Migration(migrations.Migration):

    dependencies = [
        ('models_catalog', '0025_duplicate_key_indexes'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='match',
            name='owner',
            field=models.ForeignKey(db_index=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='match',
            name='model',
            field=models.ForeignKey(db_index=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='models_catalog.sourcemodel'),
        ),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
        migrations.AlterField(
            model_name='match',
            name='owner',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name='match',
            name='model',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='models_catalog.sourcemodel'),
        ),
        migrations.AddIndex(
            model_name='match',
            index=models.Index(fields=['owner', 'model', 'local_file'], name='match_owner_model'),
        ),
    ]
