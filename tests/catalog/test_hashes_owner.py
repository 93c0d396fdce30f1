"""FileHashes.owner, the copy of the file's owner that one owner's duplicate grouping reads (issue #14)."""
import pytest

from models_catalog.models import FileHashes, LocalFile
from models_catalog.services.duplicates import duplicate_groups
from models_catalog.services.hashing import file_hashes_upsert

pytestmark = pytest.mark.django_db
SHA = "a" * 64


def _file(owner, path, **extra):
    return LocalFile.objects.create(owner=owner, origin="registered", path=path, name=path.rsplit("/", 1)[-1],
                                    status="done", size=10, format="safetensors", **extra)


def test_every_writer_stores_the_owner(user, django_user_model):
    upserted = _file(user, "/m/a.safetensors")
    file_hashes_upsert(local_file=upserted, fields={"size": 10, "sha256": SHA})  # bulk_create: no save()
    created = _file(user, "/m/b.safetensors")
    FileHashes.objects.create(local_file=created, size=10, sha256=SHA)  # save() fills it
    assert set(FileHashes.objects.values_list("owner_id", flat=True)) == {user.pk}


def test_one_owners_groups_ignore_another_owners_copy(user, django_user_model):
    other = django_user_model.objects.create_user("other", password="pw-123456")
    mine = _file(user, "/m/a.safetensors")
    theirs = _file(other, "/m/a.safetensors")
    for lf in (mine, theirs):
        FileHashes.objects.create(local_file=lf, size=10, sha256=SHA)
    assert duplicate_groups(owner=user) == []
    second = _file(user, "/m/b.safetensors")
    FileHashes.objects.create(local_file=second, size=10, sha256=SHA)
    [group] = duplicate_groups(owner=user)
    assert {m.id for m in group.members} == {mine.pk, second.pk}


def test_a_quarantined_copy_makes_no_group(user):
    kept = _file(user, "/m/a.safetensors")
    from django.utils import timezone
    gone = _file(user, "/m/b.safetensors", quarantined_at=timezone.now())
    for lf in (kept, gone):
        FileHashes.objects.create(local_file=lf, size=10, sha256=SHA)
    # SHA is repeated among the owner's hashes, but only through a quarantined file: no one-member group
    assert duplicate_groups(owner=user) == []
