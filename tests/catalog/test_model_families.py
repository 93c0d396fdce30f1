"""bf16 copies and fused-attention conversions, through register -> hashing -> analysis, and refingerprint."""

import numpy as np
import pytest
import torch
from django.core.management import call_command

from models_catalog.models import LocalFile, Match
from models_catalog.services.duplicates import duplicate_groups
from tests.factories import published_on_civitai, register_root_and_hash
from tests.model_builders import flux_pair, write_tensors
from workers.modelfiles.fingerprint import FINGERPRINT_VERSION

pytestmark = pytest.mark.django_db


def bf16_bits(array):
    return torch.from_numpy(array.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def test_flux_bfl_file_and_its_split_conversion_and_bf16_copy_are_one_group(model_root, user, sent_for_hashing):
    bfl, diffusers = flux_pair()
    write_tensors(model_root / "flux-dev.safetensors", bfl)
    write_tensors(model_root / "flux-dev-diffusers-layout.safetensors", diffusers)
    write_tensors(model_root / "flux-dev-bf16.safetensors", {k: ("BF16", bf16_bits(a)) for k, (_, a) in bfl.items()})
    files = register_root_and_hash(model_root, user, sent_for_hashing)
    assert files["flux-dev.safetensors"].content_id == files["flux-dev-diffusers-layout.safetensors"].content_id
    assert files["flux-dev.safetensors"].bf16_id == files["flux-dev-bf16.safetensors"].bf16_id != ""
    assert files["flux-dev.safetensors"].precision_id != files["flux-dev-bf16.safetensors"].precision_id
    [group] = duplicate_groups(owner=user)
    relations = {m.name: m.match for m in group.members}
    assert relations["flux-dev-bf16.safetensors"] == "precision variant"
    assert relations["flux-dev-diffusers-layout.safetensors"] in ("same weights", "keep")
    keeper = next(m for m in group.members if m.id == group.keep_id)
    assert keeper.precision == "fp32"


def test_a_bf16_copy_of_an_identified_model_is_its_precision_variant(model_root, user, sent_for_hashing):
    bfl, _ = flux_pair(seed=9)
    original = write_tensors(model_root / "flux1-dev.safetensors", bfl)
    write_tensors(model_root / "my-bf16.safetensors", {k: ("BF16", bf16_bits(a)) for k, (_, a) in bfl.items()})
    published_on_civitai(original, model="Flux Dev", version="dev", external_id=5)
    files = register_root_and_hash(model_root, user, sent_for_hashing)
    [m] = Match.objects.filter(local_file=files["my-bf16.safetensors"])
    assert m.kind == "precision" and "casting to bf16" in m.evidence and m.source_file.version.model.name == "Flux Dev"


def test_refingerprint_reads_version_1_rows_again(model_root, user, sent_for_hashing, capsys):
    bfl, _ = flux_pair(seed=4)
    write_tensors(model_root / "old.safetensors", bfl)
    lf = register_root_and_hash(model_root, user, sent_for_hashing)["old.safetensors"]
    good = (lf.content_id, lf.bf16_id)
    LocalFile.objects.filter(pk=lf.pk).update(fingerprint={**lf.fingerprint, "version": 1}, bf16_id="", content_id="v1")
    call_command("refingerprint", "--user", user.username, "--dry-run")
    assert "1 file(s) would be read again" in capsys.readouterr().out
    call_command("refingerprint", "--user", user.username)
    lf.refresh_from_db()
    assert (lf.content_id, lf.bf16_id) == good and lf.fingerprint["version"] == FINGERPRINT_VERSION
    assert lf.status == "done"
    call_command("refingerprint", "--user", user.username, "--dry-run")
    assert "0 file(s) would be read again" in capsys.readouterr().out


def test_refingerprint_skips_a_file_changed_since_it_was_hashed(model_root, user, sent_for_hashing, capsys):
    bfl, _ = flux_pair(seed=5)
    path = write_tensors(model_root / "moved.safetensors", bfl)
    lf = register_root_and_hash(model_root, user, sent_for_hashing)["moved.safetensors"]
    LocalFile.objects.filter(pk=lf.pk).update(fingerprint={**lf.fingerprint, "version": 1})
    path.write_bytes(path.read_bytes() + b"")  # same bytes, new mtime
    import os
    os.utime(path, ns=(lf.mtime_ns + 10**9, lf.mtime_ns + 10**9))
    with pytest.raises(Exception, match="nothing was read again"):
        call_command("refingerprint", "--user", user.username)
    assert "changed since it was hashed" in capsys.readouterr().out
    lf.refresh_from_db()
    assert lf.fingerprint["version"] == 1 and lf.status == "done"
