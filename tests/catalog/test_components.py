"""LocalComponent rows: written with every stored fingerprint, and what partial matching reads."""
import hashlib
import importlib
from pathlib import Path

import pytest
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext

from models_catalog.models import FileHashes, LocalComponent, LocalFile, Match, Source, SourceFile, SourceModel, SourceVersion
from models_catalog.services import analysis
from models_catalog.services.matching import PARTIAL_MIN_SHARE, local_components_sync, local_file_match
from models_catalog.services.push import pushed_files_store
from tests.model_builders import write_safetensors
from workers.hashing import hash_file
from workers.modelfiles.analyse import Analysis

pytestmark = pytest.mark.django_db


def comp(cid, nbytes, pid=None):
    return {"content_id": cid, "precision_id": pid or cid, "tensors": 1, "parameters": 1, "nbytes": nbytes}


def stored_components(lf) -> dict:
    return {c.name: (c.content_id, c.precision_id, c.nbytes) for c in LocalComponent.objects.filter(local_file=lf)}


def fingerprinted(owner, name, components, *, sha=None) -> LocalFile:
    fingerprint = {"content_id": f"c-{name}", "precision_id": f"p-{name}", "components": components}
    lf = LocalFile.objects.create(owner=owner, origin="pushed", path=f"/r/{name}", name=name, status="done",
                                  format="safetensors", content_id=fingerprint["content_id"],
                                  precision_id=fingerprint["precision_id"], size=100, fingerprint=fingerprint)
    local_components_sync(local_file_id=lf.pk, fingerprint=fingerprint)
    FileHashes.objects.create(local_file=lf, size=100, sha256=sha or hashlib.sha256(name.encode()).hexdigest(),
                              source="pushed")
    return lf


def identified(owner, name, components) -> LocalFile:
    """A local file with an exact match to a source file of its own."""
    lf = fingerprinted(owner, name, components)
    model = SourceModel.objects.create(source=Source.CIVITAI, external_id=f"m-{name}", name=f"Model {name}")
    version = SourceVersion.objects.create(model=model, external_id="1")
    sf = SourceFile.objects.create(version=version, external_id="1", name=f"published-{lf.pk}.safetensors",
                                   sha256=lf.hashes.sha256)
    Match.objects.create(local_file=lf, source_file=sf, kind="exact", evidence="SHA256 equal")
    return lf


def unrelated_identified(owner, start, count):
    for i in range(start, start + count):
        identified(owner, f"other-{i}.safetensors", {"unet": comp(f"u{i}", 800), "vae": comp(f"v{i}", 100)})


# --- what partial matching reads --------------------------------------------------


def test_partial_match_cost_does_not_grow_with_the_number_of_identified_files(user, django_assert_max_num_queries,
                                                                              monkeypatch):
    base = identified(user, "base.safetensors", {"unet": comp("u-base", 800), "vae": comp("v-shared", 200)})
    tuned = fingerprinted(user, "tuned.safetensors", {"unet": comp("u-tuned", 800), "vae": comp("v-shared", 200)})
    loaded = []
    original = LocalFile.from_db.__func__
    monkeypatch.setattr(LocalFile, "from_db", classmethod(lambda cls, *a, **kw: loaded.append(1) or original(cls, *a, **kw)))

    def measure():
        loaded.clear()
        with CaptureQueriesContext(connection) as ctx:
            [m] = local_file_match(local_file_id=tuned.pk)
        assert (m.kind, m.via_id, m.share) == ("partial", base.pk, pytest.approx(0.2))
        return len(ctx.captured_queries), len(loaded)

    unrelated_identified(user, 0, 50)
    queries_50, rows_50 = measure()
    unrelated_identified(user, 50, 450)
    with django_assert_max_num_queries(queries_50):
        local_file_match(local_file_id=tuned.pk)
    queries_500, rows_500 = measure()
    # Reading every identified file would load 450 more LocalFile rows even with a fixed query count.
    assert (queries_500, rows_500) == (queries_50, rows_50)
    assert rows_500 <= 3


@pytest.mark.parametrize("mine, theirs, shared", [
    # fine-tune: UNet differs, VAE and text encoder equal
    ({"unet": comp("u1", 800), "vae": comp("v", 100), "text_encoder": comp("t", 100)},
     {"unet": comp("u2", 800), "vae": comp("v", 100), "text_encoder": comp("t", 100)}, ["vae", "text_encoder"]),
    # fp16 cast of the other's VAE: precision ids equal, content ids not; the other file is larger
    ({"unet": comp("u1", 400), "vae": comp("v16", 200, pid="vp")},
     {"unet": comp("u2", 800), "vae": comp("v32", 400, pid="vp"), "text_encoder": comp("t", 300)}, ["vae"]),
    # shares too little to count
    ({"unet": comp("u1", 960), "vae": comp("v", 40)}, {"unet": comp("u2", 960), "vae": comp("v", 40)}, ["vae"]),
    # same content id under the same name, different precision ids
    ({"unet": comp("u1", 600), "vae": comp("v", 300, pid="a")},
     {"unet": comp("u9", 600), "vae": comp("v", 300, pid="b")}, ["vae"]),
    # same ids under another component name do not count
    ({"unet": comp("u1", 900), "vae": comp("x", 100)}, {"unet": comp("u2", 900), "text_encoder": comp("x", 100)}, []),
])
def test_share_is_my_shared_bytes_over_the_larger_file(user, other_user, mine, theirs, shared):
    base = identified(other_user, "bobs-secret-name.safetensors", theirs)
    me = fingerprinted(user, "mine.safetensors", mine)
    matches = local_file_match(local_file_id=me.pk)
    expected = sum(mine[n]["nbytes"] for n in shared) / max(sum(c["nbytes"] for c in mine.values()),
                                                            sum(c["nbytes"] for c in theirs.values()))
    if not shared or expected < PARTIAL_MIN_SHARE:
        assert matches == []
        return
    [m] = matches
    assert m.kind == "partial" and m.share == pytest.approx(expected)
    assert f"shares {', '.join(shared)} with" in m.evidence
    # another user's file is never named, nor linked
    assert m.via is None and "bobs-secret-name" not in m.evidence and base.name not in m.evidence


def test_identical_components_are_not_a_partial_match(user):
    comps = {"unet": comp("u", 800), "vae": comp("v", 200)}
    identified(user, "base.safetensors", comps)
    me = fingerprinted(user, "copy.safetensors", comps)
    assert local_file_match(local_file_id=me.pk) == []


def test_files_without_an_exact_match_are_not_a_way_to_a_source(user):
    fingerprinted(user, "unknown.safetensors", {"unet": comp("u1", 800), "vae": comp("v", 200)})
    me = fingerprinted(user, "mine.safetensors", {"unet": comp("u2", 800), "vae": comp("v", 200)})
    assert local_file_match(local_file_id=me.pk) == []


# --- where the rows are written ----------------------------------------------------


def test_sync_replaces_the_rows_and_skips_malformed_entries(user):
    lf = fingerprinted(user, "x.safetensors", {"unet": comp("u1", 10), "vae": comp("v1", 5)})
    hostile = {"components": {
        "unet": comp("u2", 20),
        "vae": {"content_id": 7, "precision_id": "p", "nbytes": 1},  # id not a string
        "text_encoder": {"content_id": "t", "precision_id": "t", "nbytes": "many"},
        "text_encoder_2": {"content_id": "t" * 65, "precision_id": "t", "nbytes": 1},  # longer than any id we make
        "x" * 65: comp("n", 1),
        "empty": comp("", 1),
        "negative": comp("n", -1),
        "flag": {"content_id": "f", "precision_id": "f", "nbytes": True},
        "not-a-dict": "unet",
        **{f"extra{i}": comp(f"e{i}", 1) for i in range(100)},
    }}
    written = local_components_sync(local_file_id=lf.pk, fingerprint=hostile)
    rows = stored_components(lf)
    assert rows["unet"] == ("u2", "u2", 20) and "vae" not in rows
    assert not {"text_encoder", "text_encoder_2", "x" * 65, "empty", "negative", "flag", "not-a-dict"} & set(rows)
    assert written == len(rows) <= 64
    for fingerprint in (None, {}, {"components": []}, "junk"):
        assert local_components_sync(local_file_id=lf.pk, fingerprint=fingerprint) == 0
        assert not LocalComponent.objects.filter(local_file=lf).exists()


def _analysing(user, tmp_path: Path) -> LocalFile:
    f = write_safetensors(tmp_path / "a.safetensors", payload=b"a" * 16)
    return LocalFile.objects.create(owner=user, origin="registered", path=str(f), name=f.name, status="analysing")


def test_analysis_writes_the_rows_and_a_new_analysis_replaces_them(user, tmp_path, monkeypatch):
    lf = _analysing(user, tmp_path)
    result = {"fp": {"content_id": "c", "precision_id": "p", "components": {"unet": comp("u1", 8), "vae": comp("v1", 2)}}}
    monkeypatch.setattr(analysis, "analyse_path", lambda path, member_paths, progress=None: Analysis(
        format="safetensors", verdict="safe", fingerprint=result["fp"]))
    analysis.local_file_analyse(local_file_id=lf.pk)
    assert stored_components(lf) == {"unet": ("u1", "u1", 8), "vae": ("v1", "v1", 2)}
    result["fp"] = {"content_id": "c2", "precision_id": "p2", "components": {"unet": comp("u2", 9)}}
    # A stage that lost the compare-and-set (row not analysing any more) writes nothing.
    analysis.local_file_analyse(local_file_id=lf.pk)
    assert set(stored_components(lf)) == {"unet", "vae"}
    LocalFile.objects.filter(pk=lf.pk).update(status="analysing")
    analysis.local_file_analyse(local_file_id=lf.pk)
    assert stored_components(lf) == {"unet": ("u2", "u2", 9)}


def _pushed(tmp_path, name, fingerprint) -> dict:
    f = write_safetensors(tmp_path / name, payload=name.encode() * 4)
    return {"path": f"D:\\models\\{name}", "hashes": hash_file(f).to_json(), "format": "safetensors", "fingerprint": fingerprint}


def test_push_writes_the_rows_and_a_changed_fingerprint_replaces_them(user, tmp_path):
    first = {"content_id": "c1", "precision_id": "p1", "components": {"unet": comp("u1", 8), "vae": comp("v1", 2)}}
    record = _pushed(tmp_path, "p.safetensors", first)
    [pk] = pushed_files_store(owner=user, host="box", files=[record]).ids
    assert stored_components(pk) == {"unet": ("u1", "u1", 8), "vae": ("v1", "v1", 2)}
    second = {"content_id": "c2", "precision_id": "p2", "components": {"vae": comp("v2", 3)}}
    outcome = pushed_files_store(owner=user, host="box", files=[{**record, "fingerprint": second}])
    assert outcome.updated == 1 and stored_components(pk) == {"vae": ("v2", "v2", 3)}
    pushed_files_store(owner=user, host="box", files=[{**record, "fingerprint": None}])
    assert stored_components(pk) == {}


def test_push_stores_the_detected_architecture_and_drops_what_it_does_not_know(user, tmp_path):
    record = _pushed(tmp_path, "lora.safetensors", {"content_id": "c1", "precision_id": "p1", "components": {}})
    [pk] = pushed_files_store(owner=user, host="box", files=[record]).ids
    assert LocalFile.objects.get(pk=pk).architecture is None  # an older client sends none
    detected = {"family": "SDXL", "kind": "lora_kohya", "kind_why": "kohya LoRA names", "family_why": "ADM 2816",
                "encoders": ["clip_l", "<script>"], "evidence": ["<b>anything</b>"]}
    outcome = pushed_files_store(owner=user, host="box", files=[{**record, "architecture": detected}])
    lf = LocalFile.objects.get(pk=pk)
    assert outcome.updated == 1 and (lf.architecture_family, lf.architecture_kind) == ("SDXL", "lora_kohya")
    assert lf.architecture["encoders"] == ["clip_l"] and lf.architecture["evidence"] == ["kohya LoRA names", "ADM 2816"]
    for hostile in ({"family": "Pony", "kind": "lora_kohya"}, {"family": "SDXL", "kind": "rm -rf"}, "SDXL", [1]):
        pushed_files_store(owner=user, host="box", files=[{**record, "architecture": hostile}])
        lf.refresh_from_db()
        assert (lf.architecture, lf.architecture_family, lf.architecture_kind) == (None, "", "")


def test_migration_fills_rows_from_fingerprints_stored_before_the_table(user):
    a = fingerprinted(user, "a.safetensors", {"unet": comp("u1", 8), "vae": comp("v1", 2)})
    b = fingerprinted(user, "b.safetensors", {"vae": comp("v2", 3, pid="vp")})
    none = LocalFile.objects.create(owner=user, origin="pushed", path="/r/none", name="none", fingerprint=None)
    expected = {lf.pk: stored_components(lf) for lf in (a, b, none)}
    LocalComponent.objects.all().delete()
    migration = importlib.import_module("models_catalog.migrations.0006_local_components")
    migration.fill_components(apps, None)
    assert {lf.pk: stored_components(lf) for lf in (a, b, none)} == expected
    assert expected[b.pk] == {"vae": ("v2", "vp", 3)} and expected[none.pk] == {}
