"""What each file is, in words: the identity every page, the API and the CLI show."""
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from models_catalog.identity import IdentityState, file_identities
from models_catalog.models import CivitaiLookup, FileHashes, LocalFile, Match, SourceFile, SourceModel, SourceVersion

pytestmark = pytest.mark.django_db


def _source(name="Hidden Base Model", version="v1.0", file="hiddenBase_v10.safetensors", type="Checkpoint"):
    model = SourceModel.objects.create(source="civitai", external_id=name, name=name, type=type)
    v = SourceVersion.objects.create(model=model, external_id=f"{name}-{version}", name=version, base_model="SD 1.5",
                                     trained_words=["hb_style"])
    return SourceFile.objects.create(version=v, external_id=file, name=file, sha256="a" * 64)


def _file(owner, name, *, status="done", **kw) -> LocalFile:
    return LocalFile.objects.create(owner=owner, origin="registered", path=f"/m/{name}", name=name, status=status, **kw)


def test_a_renamed_copy_reads_as_what_it_is(user):
    sf = _source()
    lf = _file(user, "my_favourite_model_v2_RENAMED.safetensors")
    Match.objects.create(local_file=lf, source_file=sf, kind="renamed", evidence="SHA256 equal to hiddenBase_v10.safetensors")
    identity = file_identities([lf], viewer=user)[lf.pk]
    assert identity.state == IdentityState.IDENTIFIED and identity.is_finished
    assert identity.summary == "renamed copy of Hidden Base Model v1.0 (file hiddenBase_v10.safetensors)"
    assert (identity.model_type, identity.base_model, identity.trained_words) == ("Checkpoint", "SD 1.5", ("hb_style",))
    assert identity.to_json()["badge"] == "renamed copy"


def test_the_strongest_match_wins_and_weaker_kinds_are_listed(user):
    sf = _source()
    lf = _file(user, "x.safetensors")
    Match.objects.create(local_file=lf, source_file=sf, kind="partial", evidence="shares unet")
    Match.objects.create(local_file=lf, source_file=sf, kind="precision", evidence="same weights after casting")
    identity = file_identities([lf], viewer=user)[lf.pk]
    assert identity.match_kind == "precision" and identity.other_kinds == ("partial",)


def test_only_partial_relates_a_file_it_does_not_identify_it(user):
    lf = _file(user, "finetune.safetensors")
    Match.objects.create(local_file=lf, source_file=_source(), kind="partial", evidence="shares vae")
    identity = file_identities([lf], viewer=user)[lf.pk]
    assert identity.state == IdentityState.RELATED and identity.summary.startswith("shares components with Hidden")


def test_states_before_and_without_a_match(user, settings):
    settings.CIVITAI_ENABLED = True
    working = _file(user, "a.safetensors", status="hashing")
    broken = _file(user, "b.safetensors", status="error", error="the file is gone")
    unreadable = _file(user, "c.safetensors", safety_verdict="unreadable",
                       analysis_error="truncated: 16 of 64 data bytes present")
    waiting = _file(user, "d.safetensors", safety_verdict="safe")
    FileHashes.objects.create(local_file=waiting, size=1, sha256="b" * 64)
    CivitaiLookup.objects.create(kind="SHA256", value="B" * 64, state="pending",
                                 not_before=timezone.now() + timedelta(minutes=1), last_error="HTTP 429")
    unknown = _file(user, "e.safetensors", safety_verdict="safe")
    FileHashes.objects.create(local_file=unknown, size=1, sha256="c" * 64)
    CivitaiLookup.objects.create(kind="SHA256", value="C" * 64, state="miss", checked_at=timezone.now())
    failed = _file(user, "f.safetensors", safety_verdict="safe")
    FileHashes.objects.create(local_file=failed, size=1, sha256="d" * 64)
    CivitaiLookup.objects.create(kind="SHA256", value="D" * 64, state="error", last_error="HTTP 400: bad")

    ids = file_identities([working, broken, unreadable, waiting, unknown, failed], viewer=user)
    assert ids[working.pk].state == "working" and not ids[working.pk].is_finished
    assert ids[broken.pk].summary == "broken: the file is gone"
    assert ids[unreadable.pk].summary == "broken: truncated: 16 of 64 data bytes present"
    assert ids[waiting.pk].state == "waiting" and not ids[waiting.pk].is_finished
    assert "retrying at" in ids[waiting.pk].waiting_for and "HTTP 429" in ids[waiting.pk].waiting_for
    assert ids[unknown.pk].summary == "unknown"
    assert ids[failed.pk].state == "unknown" and "Civitai could not be asked: HTTP 400: bad" in ids[failed.pk].summary


def test_evidence_through_another_users_file_never_names_it(user, other_user):
    sf = _source()
    theirs = _file(other_user, "bobs-secret-name.safetensors")
    mine = _file(user, "mine.ckpt")
    Match.objects.create(local_file=mine, source_file=sf, kind="converted", via=theirs,
                         evidence="same tensors as bobs-secret-name.safetensors")
    identity = file_identities([mine], viewer=user)[mine.pk]
    assert identity.match_kind == "converted" and "bobs-secret-name" not in identity.evidence
    assert "bobs-secret-name" in file_identities([mine], viewer=other_user)[mine.pk].evidence  # its owner may


def test_query_count_does_not_grow_with_the_number_of_files(user, settings):
    settings.CIVITAI_ENABLED = True
    sf = _source()

    def make(n):
        files = []
        for i in range(n):
            lf = _file(user, f"f{n}-{i}.safetensors")
            FileHashes.objects.create(local_file=lf, size=1, sha256=f"{n:02d}{i:062d}")
            if i % 2:
                Match.objects.create(local_file=lf, source_file=sf, kind="exact", evidence="e")
            files.append(lf)
        return files

    counts = []
    for n in (4, 40):
        files = make(n)
        with CaptureQueriesContext(connection) as ctx:
            file_identities(files, viewer=user)
        counts.append(len(ctx))
    assert counts[0] == counts[1]
