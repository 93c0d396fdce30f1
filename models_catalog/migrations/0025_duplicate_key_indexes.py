"""Issue #14 (scale): the indexes duplicate grouping (services/duplicates.py) reads, index-only.

- (owner, e5m2_id) WHERE e5m2_id <> '': the e5m2 key gets the owner-led partial index the other LocalFile
  keys have; without it the e5m2 GROUP BY read all the owner's rows from the table.
- (owner, sha256) WHERE sha256 <> '' now INCLUDEs local_file_id (PostgreSQL; other databases ignore it):
  the files holding a repeated SHA256 are read from the index, not from 10,000 heap rows an owner.
"""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('models_catalog', '0024_localfile_folded_id'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='filehashes',
            name='file_hashes_owner_sha256',
        ),
        migrations.AddIndex(
            model_name='filehashes',
            index=models.Index(condition=models.Q(('sha256', ''), _negated=True), fields=['owner', 'sha256'], include=('local_file',), name='file_hashes_owner_sha256'),
        ),
        migrations.AddIndex(
            model_name='localfile',
            index=models.Index(condition=models.Q(('e5m2_id', ''), _negated=True), fields=['owner', 'e5m2_id'], name='local_file_owner_e5m2_id'),
        ),
    ]
