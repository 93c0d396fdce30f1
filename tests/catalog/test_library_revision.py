"""The duplicate groups shown are cached under a library revision that moves on every committed write to
what they are made of, whichever ORM call (or cascade, or raw cursor) made it; acting on them reads afresh.

transactional_db: the revision moves when a transaction commits, which the usual test transaction never does.
"""
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from models_catalog import library_revision
from models_catalog.models import ApiToken, FileHashes, LocalFile, Match, SourceModel
from models_catalog.services.heartbeat import heartbeat
from models_catalog.services.hashing import ProgressWriter
from models_catalog.services.duplicates import duplicate_groups, shown_duplicate_groups
from tests.factories import catalog_file, local_file, match

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def revision_kept(monkeypatch):
    """The suite's file-based cache stands in for Redis: one process, so its increments cannot race."""
    monkeypatch.setattr(library_revision, "shared", lambda: True)


@pytest.fixture
def owner():
    return get_user_model().objects.create_user("rev-owner", password="pw-123456")


@pytest.fixture
def twins(owner):
    """Two exact copies: one duplicate group."""
    return [local_file(owner, "a.safetensors", data=b"same bytes"), local_file(owner, "b.safetensors", data=b"same bytes")]


def moved(change) -> bool:
    before = library_revision.current()
    change()
    return library_revision.current() != before


def test_the_sql_of_watched_writes_is_recognised():
    assert library_revision.writes_watched_table('UPDATE "models_catalog_localfile" SET "name" = %s WHERE id = 1')
    assert library_revision.writes_watched_table('INSERT INTO "models_catalog_match" ("kind") VALUES (%s)')
    assert library_revision.writes_watched_table('DELETE FROM "models_catalog_filehashes" WHERE 1')
    assert library_revision.writes_watched_table('  update models_catalog_sourcemodel set name = 1')
    assert not library_revision.writes_watched_table('SELECT * FROM "models_catalog_localfile"')
    assert not library_revision.writes_watched_table('UPDATE "models_catalog_apitoken" SET "last_used_at" = %s')
    assert not library_revision.writes_watched_table('UPDATE "models_catalog_localfilex" SET a = 1')


def test_every_kind_of_write_to_a_watched_table_moves_the_revision(owner, twins):
    a, b = twins
    sf = catalog_file("Toad")
    assert moved(lambda: LocalFile.objects.filter(pk=a.pk).update(name="renamed.safetensors"))
    assert moved(lambda: FileHashes.objects.filter(local_file=b).update(autov3_full="ab" * 32))
    assert moved(lambda: match(a, sf))
    assert moved(lambda: SourceModel.objects.filter(pk=sf.version.model_id).update(name="Toad v2"))
    assert moved(lambda: LocalFile.objects.bulk_update([a], ["size"]))

    def raw_cursor_write():
        with connection.cursor() as cur:
            cur.execute("UPDATE models_catalog_localfile SET safety_verdict = 'dangerous' WHERE id = %s", [b.pk])
    assert moved(raw_cursor_write)
    assert moved(lambda: owner.delete())  # a cascade: the files, hashes and matches go with the user
    assert not Match.objects.exists()


def test_what_does_not_change_a_group_leaves_the_revision(owner, twins):
    assert not moved(lambda: ApiToken.objects.create(user=owner, prefix="mxr_x", digest="d" * 64))
    assert not moved(lambda: list(LocalFile.objects.all()))


def test_a_workers_progress_and_heartbeat_writes_leave_the_revision(owner, twins):
    """Written every second while anything hashes: were they bumps, no one's groups would stay cached."""
    a, _ = twins
    progress = ProgressWriter(a.pk)
    progress.last = 0.0  # as if the last write were long ago
    assert not moved(lambda: progress(5, 10))
    assert LocalFile.objects.get(pk=a.pk).bytes_done == 5  # the write happened
    LocalFile.objects.filter(pk=a.pk).update(status=LocalFile.Status.HASHING)
    with heartbeat(a.pk, every=0.01):  # beats at once, then every 10 ms
        before = library_revision.current()
        time.sleep(0.1)
        assert library_revision.current() == before
    assert LocalFile.objects.get(pk=a.pk).heartbeat_at is not None
    assert not moved(lambda: LocalFile.objects.filter(pk=a.pk).update(stage_attempts=F("stage_attempts") + 1))
    # the same statement with a column a group reads in it counts
    assert moved(lambda: LocalFile.objects.filter(pk=a.pk).update(bytes_done=10, status=LocalFile.Status.DONE))


def test_a_write_that_changes_no_row_leaves_the_revision(owner, twins):
    a, b = twins
    assert not moved(lambda: Match.objects.filter(local_file=a).delete())  # the matching's clean-up, nothing there
    assert not moved(lambda: LocalFile.objects.filter(pk=a.pk, status=LocalFile.Status.HASHING).update(
        status=LocalFile.Status.ERROR))  # a conditional update that found no row
    assert moved(lambda: LocalFile.objects.filter(pk=a.pk, status=LocalFile.Status.DONE).update(
        status=LocalFile.Status.ERROR))
    assert moved(lambda: LocalFile.objects.bulk_update([b], ["name"]))


def test_an_update_counts_unless_it_assigns_only_progress_columns():
    counts = library_revision.writes_watched_table
    assert not counts('UPDATE "models_catalog_localfile" SET "bytes_done" = %s, "heartbeat_at" = %s WHERE "id" = %s')
    assert not counts('UPDATE "models_catalog_localfile" SET "stage_attempts" = ("stage_attempts" + %s) WHERE "id" = %s')
    assert counts('UPDATE "models_catalog_localfile" SET "bytes_done" = %s, "status" = %s WHERE "id" = %s')
    # commas and WHEREs inside an expression or a literal are not the clause's own
    assert counts('UPDATE "models_catalog_localfile" SET "heartbeat_at" = COALESCE(%s, (SELECT 1 WHERE 1 = 1)), '
                  '"name" = %s WHERE "id" = %s')
    assert not counts("UPDATE models_catalog_localfile SET heartbeat_at = 'x, status = 1 WHERE' WHERE id = 1")
    assert counts("UPDATE models_catalog_localfile SET (bytes_done, status) = (1, 'done')")  # unreadable: counts
    assert counts('UPDATE "models_catalog_filehashes" SET "bytes_done" = %s')  # only LocalFile has progress columns


def test_the_revision_moves_when_the_write_commits_and_not_for_a_rollback(owner, twins):
    a, _ = twins
    before = library_revision.current()
    with transaction.atomic():
        LocalFile.objects.filter(pk=a.pk).update(name="inside.safetensors")
        LocalFile.objects.filter(pk=a.pk).update(name="inside-again.safetensors")
        assert library_revision.current() == before  # not yet visible to anyone else: nothing to bump for
    after_commit = library_revision.current()
    assert after_commit != before

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        LocalFile.objects.filter(pk=a.pk).update(name="never.safetensors")
        raise Abort
    assert library_revision.current() == after_commit


def test_shown_groups_are_cached_until_the_library_changes(owner, twins, settings):
    settings.DUPLICATES_CACHE_SECONDS = 300
    a, b = twins
    first = shown_duplicate_groups(owner=owner)
    assert [sorted(m.id for m in g.members) for g in first] == [sorted([a.pk, b.pk])]
    with CaptureQueriesContext(connection) as queries:
        again = shown_duplicate_groups(owner=owner)
    assert again == first
    assert not any("models_catalog_localfile" in q["sql"] for q in queries.captured_queries)  # from the cache

    LocalFile.objects.filter(pk=b.pk).delete()  # one copy gone: no group any more
    assert shown_duplicate_groups(owner=owner) == []
    c = local_file(owner, "c.safetensors", data=b"same bytes")  # another copy: a group again
    assert [sorted(m.id for m in g.members) for g in shown_duplicate_groups(owner=owner)] == [sorted([a.pk, c.pk])]
    LocalFile.objects.filter(pk=c.pk).update(name="kept-name.safetensors")
    assert {m.name for m in shown_duplicate_groups(owner=owner)[0].members} == {"a.safetensors", "kept-name.safetensors"}


def test_inside_a_transaction_shown_groups_are_computed_afresh(owner, twins, settings):
    settings.DUPLICATES_CACHE_SECONDS = 300
    shown_duplicate_groups(owner=owner)  # cached
    with transaction.atomic():
        LocalFile.objects.filter(pk=twins[1].pk).delete()
        # this transaction's own write is not committed, so the revision has not moved; the cache must not answer
        assert shown_duplicate_groups(owner=owner) == duplicate_groups(owner=owner) == []


@pytest.mark.parametrize("why_not", ["zero lifetime", "no Redis"])
def test_without_a_lifetime_or_redis_nothing_is_cached(owner, twins, settings, monkeypatch, why_not):
    settings.DUPLICATES_CACHE_SECONDS = 0 if why_not == "zero lifetime" else 300
    if why_not == "no Redis":
        monkeypatch.setattr(library_revision, "shared", lambda: False)
        assert not moved(lambda: LocalFile.objects.filter(pk=twins[0].pk).update(name="x.safetensors"))
    shown_duplicate_groups(owner=owner)
    with CaptureQueriesContext(connection) as queries:
        shown_duplicate_groups(owner=owner)
    assert any("models_catalog_localfile" in q["sql"] for q in queries.captured_queries)


def test_the_revision_is_trusted_only_in_redis(settings, monkeypatch):
    monkeypatch.undo()  # the real shared()
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": "/tmp/x"}}
    assert not library_revision.shared()
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1"}}
    assert library_revision.shared()


def test_a_write_while_redis_is_down_neither_fails_nor_waits_on_it_again(owner, twins, monkeypatch):
    calls = []

    def unreachable(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(library_revision.cache, "incr", unreachable)
    monkeypatch.setattr(library_revision, "_down_since", [0.0])
    LocalFile.objects.filter(pk=twins[0].pk).update(name="written anyway.safetensors")
    LocalFile.objects.filter(pk=twins[1].pk).update(name="and this.safetensors")
    assert LocalFile.objects.filter(name__in=["written anyway.safetensors", "and this.safetensors"]).count() == 2
    assert len(calls) == 1  # the second write did not ask the unreachable cache again


def _hashed_file_of(user, path, monkeypatch):
    """Register and run the hashing stage (hashing, analysis, identification) as a worker does."""
    from models_catalog.services import register as register_service
    from models_catalog.services.hashing import local_file_hash
    from models_catalog.services.register import local_file_register

    monkeypatch.setattr(register_service, "enqueue_hashing_many", lambda *, local_files: None)
    lf = local_file_register(paths=[str(path)], owner=user).files[0]
    local_file_hash(local_file_id=lf.pk)
    lf.refresh_from_db()
    assert lf.status == LocalFile.Status.DONE, lf.error
    return lf


def test_a_worker_hashing_one_users_file_leaves_the_other_users_groups_cached(owner, twins, model_root, settings,
                                                                             monkeypatch):
    from tests.model_builders import write_safetensors

    settings.DUPLICATES_CACHE_SECONDS = 300
    shown_duplicate_groups(owner=owner)  # cached
    other = get_user_model().objects.create_user("rev-other", password="pw-123456")
    library, others = library_revision.current(), library_revision.current(other.pk)
    _hashed_file_of(other, write_safetensors(model_root / "new.safetensors"), monkeypatch)
    assert library_revision.current() == library  # nothing library-wide was written
    assert library_revision.current(other.pk) != others  # the other user's own groups are read afresh
    with CaptureQueriesContext(connection) as queries:
        assert [sorted(m.id for m in g.members) for g in shown_duplicate_groups(owner=owner)] == [
            sorted(m.pk for m in twins)]
    assert not any("models_catalog_localfile" in q["sql"] for q in queries.captured_queries)  # from the cache


def test_what_the_stage_identifies_moves_the_library_wide_revision(owner, twins, model_root, settings, monkeypatch):
    """Identification writes matches (and may rematch anyone's files): every user's groups are read afresh."""
    from tests.model_builders import write_safetensors

    path = write_safetensors(model_root / "known.safetensors")
    catalog_file("Known", data=path.read_bytes())
    other = get_user_model().objects.create_user("rev-other", password="pw-123456")
    library = library_revision.current()
    lf = _hashed_file_of(other, path, monkeypatch)
    assert Match.objects.filter(local_file=lf).exists()
    assert library_revision.current() != library


def test_owner_scoped_writes_move_that_owners_revision_only(owner, twins):
    a, _ = twins
    library, own = library_revision.current(), library_revision.current(owner.pk)
    with library_revision.owner_writes(owner.pk):
        LocalFile.objects.filter(pk=a.pk).update(name="scoped.safetensors")
        with transaction.atomic():  # on commit, as outside a scope
            FileHashes.objects.filter(local_file=a).update(autov3_full="cd" * 32)
            assert library_revision.current(owner.pk) == own + 1
        assert library_revision.current(owner.pk) == own + 2
        assert library_revision.current() == library
        with library_revision.owner_writes(None):
            assert moved(lambda: LocalFile.objects.filter(pk=a.pk).update(name="library-wide.safetensors"))
        sf = catalog_file("Scoped")
        assert moved(lambda: match(a, sf))  # a match is never one owner's alone
