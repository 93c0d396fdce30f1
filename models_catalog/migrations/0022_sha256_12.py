# SHA256_12 (SHA256[:12], what some Forge builds write as "Model hash"): a column on every HashFields table,
# filled for the rows that already exist. New rows get it from workers.kinds.with_derived / the engine record.

from django.db import migrations, models
from django.db.models.functions import Substr

TABLES = ("filehashes", "foldermember", "sourcefile")


def fill_from_sha256(apps, schema_editor):
    # One UPDATE per table: the value is a prefix of a column the row already has.
    for name in TABLES:
        model = apps.get_model("models_catalog", name)
        model.objects.exclude(sha256="").update(sha256_12=Substr("sha256", 1, 12))


class Migration(migrations.Migration):

    dependencies = [
        ('models_catalog', '0021_worker_heartbeat'),
    ]

    operations = [
        *(
            migrations.AddField(
                model_name=name,
                name='sha256_12',
                field=models.CharField(blank=True, db_index=True, default='', max_length=12),
            )
            for name in TABLES
        ),
        # Reversing drops the column, so there is nothing to undo here.
        migrations.RunPython(fill_from_sha256, migrations.RunPython.noop),
    ]
