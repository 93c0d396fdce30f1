"""fp8 (e4m3fn) copies through register -> hashing -> analysis: matching, duplicates, refingerprint."""

import pytest
import torch
from django.core.management import call_command

from models_catalog.models import LocalFile, Match
from models_catalog.services.duplicates import duplicate_groups
from tests.factories import published_on_civitai, register_root_and_hash, token_client
from tests.model_builders import flux_pair, write_tensors

pytestmark = pytest.mark.django_db


def fp8_bits(array):
    return torch.from_numpy(array.copy()).to(torch.float8_e4m3fn).view(torch.uint8).numpy()


def test_an_fp8_copy_of_an_identified_model_is_its_precision_variant(model_root, user, sent_for_hashing):
    bfl, _ = flux_pair(seed=11)
    original = write_tensors(model_root / "flux1-dev.safetensors", bfl)
    write_tensors(model_root / "flux1-dev-fp8.safetensors", {k: ("F8_E4M3", fp8_bits(a)) for k, (_, a) in bfl.items()})
    published_on_civitai(original, model="Flux Dev", version="dev", external_id=7)
    files = register_root_and_hash(model_root, user, sent_for_hashing)
    fp32, fp8 = files["flux1-dev.safetensors"], files["flux1-dev-fp8.safetensors"]
    assert fp32.fp8_id == fp8.fp8_id == fp8.content_id != ""
    assert fp32.bf16_id != fp8.bf16_id and fp32.precision_id != fp8.precision_id  # only fp8_id links them
    [m] = Match.objects.filter(local_file=fp8)
    assert m.kind == "precision" and "after casting to fp8 e4m3fn" in m.evidence
    assert m.source_file.version.model.name == "Flux Dev"


def test_fp8_is_the_lossiest_copy_and_kept_only_when_asked(model_root, user, sent_for_hashing):
    bfl, _ = flux_pair(seed=12)
    write_tensors(model_root / "full.safetensors", bfl)
    write_tensors(model_root / "small-fp8.safetensors", {k: ("F8_E4M3", fp8_bits(a)) for k, (_, a) in bfl.items()})
    register_root_and_hash(model_root, user, sent_for_hashing)
    [group] = duplicate_groups(owner=user)
    members = {m.name: m for m in group.members}
    assert members["full.safetensors"].match == "keep"
    assert members["small-fp8.safetensors"].match == "precision variant"
    assert members["small-fp8.safetensors"].precision == "fp8" and members["small-fp8.safetensors"].reclaim == "lossy"
    [asked] = duplicate_groups(owner=user, prefer_precision="fp8")
    assert next(m for m in asked.members if m.id == asked.keep_id).name == "small-fp8.safetensors"
    assert "discards the full-precision weights" in asked.warning


def test_refingerprint_fills_fp8_id(model_root, user, sent_for_hashing):
    bfl, _ = flux_pair(seed=13)
    write_tensors(model_root / "old.safetensors", bfl)
    lf = register_root_and_hash(model_root, user, sent_for_hashing)["old.safetensors"]
    good = lf.fp8_id
    assert good
    LocalFile.objects.filter(pk=lf.pk).update(fingerprint={**lf.fingerprint, "version": 2}, fp8_id="")
    call_command("refingerprint", "--user", user.username)
    lf.refresh_from_db()
    assert lf.fp8_id == good and lf.fingerprint["fp8_id"] == good


def test_unrelated_fp8_models_are_not_grouped(model_root, user, sent_for_hashing):
    for seed in (21, 22):
        bfl, _ = flux_pair(seed=seed)
        write_tensors(model_root / f"m{seed}.safetensors", bfl)
        write_tensors(model_root / f"m{seed}-fp8.safetensors", {k: ("F8_E4M3", fp8_bits(a)) for k, (_, a) in bfl.items()})
    register_root_and_hash(model_root, user, sent_for_hashing)
    groups = duplicate_groups(owner=user)
    assert sorted(sorted(m.name for m in g.members) for g in groups) == [
        ["m21-fp8.safetensors", "m21.safetensors"], ["m22-fp8.safetensors", "m22.safetensors"]]


def e5m2_bits(array):
    return torch.from_numpy(array.copy()).to(torch.float8_e5m2).view(torch.uint8).numpy()


def test_an_e5m2_copy_of_an_identified_model_is_its_precision_variant(model_root, user, sent_for_hashing):
    bfl, _ = flux_pair(seed=14)
    original = write_tensors(model_root / "flux1-dev.safetensors", bfl)
    write_tensors(model_root / "flux1-dev-e5m2.safetensors", {k: ("F8_E5M2", e5m2_bits(a)) for k, (_, a) in bfl.items()})
    published_on_civitai(original, model="Flux Dev", version="dev", external_id=8)
    files = register_root_and_hash(model_root, user, sent_for_hashing)
    fp32, e5m2 = files["flux1-dev.safetensors"], files["flux1-dev-e5m2.safetensors"]
    assert fp32.e5m2_id == e5m2.e5m2_id == e5m2.content_id != "" and fp32.fp8_id != e5m2.fp8_id
    [m] = Match.objects.filter(local_file=e5m2)
    assert m.kind == "precision" and "after casting to fp8 e5m2" in m.evidence
    [group] = duplicate_groups(owner=user)
    assert {m.name: m.match for m in group.members}["flux1-dev-e5m2.safetensors"] == "precision variant"
    detail = token_client(user).get(f"/api/v1/files/{e5m2.pk}/").json()  # the API shows the id that linked them
    assert detail["e5m2_id"] == fp32.e5m2_id
