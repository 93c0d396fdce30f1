"""Issue #14 (scale): the e5m2 group key gets the owner-led partial index the other LocalFile keys have.

Duplicate grouping (services/duplicates.py) groups one owner's rows by each key as an index-only range of
(owner, key) WHERE key <> ''; without this one the e5m2 GROUP BY read all the owner's rows from the table.
"""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('models_catalog', '0023_owner_search_and_duplicates'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name='localfile',
            index=models.Index(condition=models.Q(('e5m2_id', ''), _negated=True), fields=['owner', 'e5m2_id'], name='local_file_owner_e5m2_id'),
        ),
    ]
