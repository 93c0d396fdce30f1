"""Duplicates on a real library: the demo files on disk, registered and hashed, plus a hard link and a symlink.

What the user must be able to trust: which deletions lose nothing, that a hard link frees nothing, and that the
suggested keeper is never a copy that dropped precision.
"""
import hashlib
import os

import pytest

from models_catalog.models import FileHashes, LocalFile, Source, SourceFile, SourceModel, SourceVersion
from models_catalog.services.duplicates import duplicate_groups
from models_catalog.services.hashing import local_files_hash
from models_catalog.services.register import local_file_register
from tests.fakes.demo_library import build_demo_library

pytestmark = pytest.mark.django_db


@pytest.fixture
def library(model_root, user, sent_for_hashing):
    lib = build_demo_library(model_root / "lib")
    ckpts = lib.root / "checkpoints"
    os.link(lib.files["toad_fp32"], ckpts / "toad-hardlink.safetensors")
    (ckpts / "toad-symlink.safetensors").symlink_to(lib.files["toad_fp32"])
    # Civitai hosts the fp32 toad under its own name: local matching finds it while the files are read.
    model = SourceModel.objects.create(source=Source.CIVITAI, external_id="1", name="Toad Diffusion")
    version = SourceVersion.objects.create(model=model, external_id="10", name="v1.0")
    SourceFile.objects.create(version=version, external_id="100", name=lib.files["toad_fp32"].name,
                              sha256=hashlib.sha256(lib.files["toad_fp32"].read_bytes()).hexdigest())
    outcome = local_file_register(paths=[str(lib.root)], owner=user)
    assert not outcome.refused, outcome.refused
    local_files_hash(local_file_ids=sent_for_hashing)
    assert set(LocalFile.objects.values_list("status", flat=True)) == {"done"}
    return lib


def by_path(group):
    return {m.path: m for m in group.members}


def group_of(groups, path):
    [group] = [g for g in groups if str(path) in by_path(g)]
    return group


def test_each_member_says_how_it_relates_to_the_group_and_the_keeper_loses_nothing(library, user):
    files = library.files
    toad = group_of(duplicate_groups(owner=user), files["toad_fp32"])
    members = by_path(toad)
    hardlink = members[str(files["toad_fp32"].parent / "toad-hardlink.safetensors")]
    relations = {key: members[str(files[key])].match for key in
                 ("toad_fp32", "toad_renamed", "toad_ckpt", "toad_diffusers", "toad_fp16")}
    assert relations == {"toad_fp32": "keep", "toad_renamed": "exact copy", "toad_ckpt": "converted",
                         "toad_diffusers": "converted", "toad_fp16": "precision variant"}
    # The Civitai-named original is kept over its renamed copy and its hard link, which hold the same bytes.
    assert toad.keep_id == members[str(files["toad_fp32"])].id
    assert "the same bytes as the source's file, under its name" in toad.reason
    assert hardlink.match == "same file" and hardlink.reclaim == "none" and "hard link" in hardlink.evidence
    same_bytes = {m.copy_set for m in (hardlink, members[str(files["toad_fp32"])], members[str(files["toad_renamed"])])}
    assert len(same_bytes) == 1
    assert "toad-symlink.safetensors" not in str(members)  # a symlink is the file it points to: no second member
    size = {key: files[key].stat().st_size for key in ("toad_renamed", "toad_ckpt", "toad_fp16")}
    diffusers = members[str(files["toad_diffusers"])].size
    assert toad.lossless_bytes == size["toad_renamed"] + size["toad_ckpt"] + diffusers
    assert toad.lossy_bytes == size["toad_fp16"] and toad.warning == ""
    assert members[str(files["toad_fp16"])].reclaim == "lossy"


def test_default_keeper_is_always_a_highest_precision_copy(library, user):
    order = {"fp64": 0, "fp32": 1, "bf16": 2, "fp16": 2, "fp8": 3, "": 4}
    groups = duplicate_groups(owner=user)
    assert len(groups) >= 2
    for g in groups:
        keeper = next(m for m in g.members if m.id == g.keep_id)
        assert order[keeper.precision] == min(order[m.precision] for m in g.members), g
        assert g.warning == ""


def test_choosing_fp16_says_what_it_discards(library, user):
    files = library.files
    frog = group_of(duplicate_groups(owner=user, prefer_precision="fp16"), files["frog_fp32"])
    members = by_path(frog)
    assert frog.keep_id == members[str(files["frog_fp16_mine"])].id
    assert "discards the full-precision weights (fp32)" in frog.warning and "cannot be recovered" in frog.warning
    original = members[str(files["frog_fp32"])]
    assert original.match == "precision variant" and "more precise than the keeper" in original.evidence
    # The default keeps the original instead.
    frog = group_of(duplicate_groups(owner=user), files["frog_fp32"])
    assert frog.keep_id == original.id and frog.warning == ""


def test_fp32_preference_keeps_the_original_not_a_copy(library, user):
    toad = group_of(duplicate_groups(owner=user, prefer_precision="fp32"), library.files["toad_fp32"])
    assert toad.keep_id == by_path(toad)[str(library.files["toad_fp32"])].id


def test_lossless_savings_come_first(library, user):
    groups = duplicate_groups(owner=user)
    assert [g.lossless_bytes for g in groups] == sorted((g.lossless_bytes for g in groups), reverse=True)


def pushed(owner, name, *, sha, content_id):
    lf = LocalFile.objects.create(owner=owner, origin="pushed", path=f"/m/{name}", name=name, status="done",
                                  format="safetensors", content_id=content_id, precision_id=content_id, size=10,
                                  fingerprint={"dtypes": {"F16": 1}})
    FileHashes.objects.create(local_file=lf, size=10, sha256=sha, source="pushed")
    return lf


def test_only_files_that_share_a_key_are_loaded(user, django_assert_num_queries):
    for i in range(40):
        pushed(user, f"unique-{i}.safetensors", sha=f"{i:064x}", content_id=f"c{i}")
    pushed(user, "a.safetensors", sha="a" * 64, content_id="ca")
    pushed(user, "a-copy.safetensors", sha="a" * 64, content_id="ca")
    with django_assert_num_queries(1):  # the candidates' rows, each with its source match (a correlated subquery)
        [g] = duplicate_groups(owner=user)
    assert {m.name for m in g.members} == {"a.safetensors", "a-copy.safetensors"}


def test_everyones_duplicates_are_still_grouped_per_owner(user, other_user):
    pushed(user, "mine.safetensors", sha="a" * 64, content_id="ca")
    pushed(other_user, "theirs.safetensors", sha="a" * 64, content_id="ca")
    assert duplicate_groups(owner=None) == []  # one copy each: neither may be told to delete the other's
    pushed(other_user, "theirs-2.safetensors", sha="a" * 64, content_id="ca")
    [g] = duplicate_groups(owner=None)
    assert {m.name for m in g.members} == {"theirs.safetensors", "theirs-2.safetensors"}


def test_a_key_shared_only_with_a_quarantined_or_unfinished_file_loads_nothing(user):
    """The owner's key groups count every row (an index-only range); the files that share a value only with
    a quarantined or not-done file are then dropped, so they cannot join a group through another key."""
    from django.utils import timezone

    lonely = pushed(user, "lonely.safetensors", sha="1" * 64, content_id="cx")
    gone = pushed(user, "gone.safetensors", sha="2" * 64, content_id="cx")
    LocalFile.objects.filter(pk=gone.pk).update(quarantined_at=timezone.now())
    unfinished = pushed(user, "unfinished.safetensors", sha="1" * 64, content_id="cy")
    LocalFile.objects.filter(pk=unfinished.pk).update(status="queued")
    pair = [pushed(user, f"pair-{i}.safetensors", sha="3" * 64, content_id=f"cp{i}") for i in (1, 2)]
    # lonely's AutoV3 equals the pair's: were it loaded, the grouping would put it in their group
    FileHashes.objects.filter(local_file__in=[lonely, *pair]).update(autov3_full="f" * 64)
    [g] = duplicate_groups(owner=user)
    assert {m.id for m in g.members} == {p.pk for p in pair}


def test_each_candidates_source_match_comes_with_its_row_exact_name_first(user, django_assert_num_queries):
    from models_catalog.models import Match

    model = SourceModel.objects.create(source=Source.CIVITAI, external_id="7", name="Seven")
    version = SourceVersion.objects.create(model=model, external_id="70", name="v1")
    source = SourceFile.objects.create(version=version, external_id="700", name="s.safetensors", sha256="b" * 64)
    other = SourceFile.objects.create(version=version, external_id="701", name="t.safetensors", sha256="c" * 64)
    files = [pushed(user, f"b{i}.safetensors", sha="b" * 64, content_id="cb") for i in range(3)]
    for lf, kind in zip(files, ("renamed", "exact", "renamed")):
        Match.objects.create(local_file=lf, source_file=source, kind=kind, evidence="e")
    Match.objects.create(local_file=files[1], source_file=other, kind="renamed", evidence="e")  # exact wins
    with django_assert_num_queries(1):
        [g] = duplicate_groups(owner=user)
    assert g.model == "Seven" and g.model_id == model.pk
    assert g.keep_id == files[1].pk  # the source's bytes under its own name: kept
    assert "under its name" in g.reason
