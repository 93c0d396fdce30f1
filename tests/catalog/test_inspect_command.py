"""`manage.py inspect`: readable sections for people, the raw report with --json.

Expected hashes come from hashlib over the bytes the test wrote, never from the app.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re

import pytest
from django.core.management import CommandError, call_command

from models_catalog.models import Match, Source, SourceFile, SourceModel, SourceVersion
from tests.browser.conftest import write_model
from tests.model_builders import write_safetensors
from tests.factories import hashed
from tests.workers.modelfiles.hostile import HOSTILE, call, glob, pickle_of, s

pytestmark = pytest.mark.django_db

# What a Python repr of the report looks like; none of it may reach the text form.
REPR_MARKS = ("{'", "[{", "': ", "None", "True", "False", "b'", 'b"', "Traceback")


def inspect_text(path) -> str:
    out = io.StringIO()
    call_command("inspect", str(path), stdout=out)
    return out.getvalue()


def section(text: str, title_start: str) -> list[str]:
    """The rows under the heading that starts with `title_start`, up to the next blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title_start))
    rows = []
    for line in lines[start + 1:]:
        if not line:
            break
        rows.append(line)
    return rows


def test_text_form_is_sections_of_words_and_aligned_hashes(model_root):
    model = write_model(model_root / "tiny-lora.safetensors", seed=3)
    data = model.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest().upper()
    text = inspect_text(model)

    for mark in REPR_MARKS:
        assert mark not in text, (mark, text)
    what = section(text, "File")
    assert what[0] == f"  path          {model}"
    assert "  format        safetensors: tensors and a JSON header, no code" in what
    assert f"  size          {len(data) / 1024:.1f} KiB ({len(data):,} bytes)" in what
    assert "  safety        safe: nothing in it can run code when it is loaded" in what

    described = section(text, "What the file says about itself")
    assert "  architecture  LoRA (kohya)" in described  # no attn2 keys: the family stays unknown

    fingerprint = section(text, "Tensor fingerprint")
    # The 4 alphas equal the rank (16): the neutral scale, left out (workers/modelfiles/lora_forms.py).
    assert "  tensors       8 (and 4 left out: buffers that are not weights, LoRA alphas equal to their rank)" \
        in fingerprint
    assert "  dtypes        F16 x4, F32 x4" in fingerprint
    content_id = next(row.split()[-1] for row in fingerprint if row.startswith("  content id"))
    header, lora = [row for row in fingerprint if "component" in row or row.strip().startswith("lora ")]
    assert header.split()[1:] == ["component", "tensors", "parameters", "data", "content", "precision"]
    assert lora.split()[1] == "8" and content_id[:12] in lora.split()

    hashes = section(text, "Hashes (Civitai form")
    assert hashes[0] == f"  SHA256  {sha256}"
    assert hashes[2] == f"  AutoV2  {sha256[:10]}"
    assert [row.split()[0] for row in hashes] == ["SHA256", "AutoV1", "AutoV2", "AutoV3", "CRC32", "BLAKE3"]
    assert {row.index(row.split()[1]) for row in hashes} == {10}, "hash values start in one column"
    assert "only files of 2.0 MiB or more" in hashes[1]

    assert section(text, "In the catalog") == [
        "  not registered (`manage.py register PATH` adds it, under the model roots)"]


def test_catalog_section_names_status_and_matches_in_words(model_root, user):
    model = write_safetensors(model_root / "renamed-copy.safetensors", payload=b"\x07" * 64)
    lf = hashed(model, user)
    m = SourceModel.objects.create(source=Source.CIVITAI, external_id="9", name="Pretty LoRA")
    v = SourceVersion.objects.create(model=m, external_id="90", name="v1")
    source = SourceFile.objects.create(version=v, external_id="900", name="pretty.safetensors",
                                       sha256=hashlib.sha256(model.read_bytes()).hexdigest())
    Match.objects.create(local_file=lf, source_file=source, kind="renamed", evidence="SHA256 equal to Civitai's file")

    rows = section(inspect_text(model), "In the catalog")
    assert rows[0] == f"  file #{lf.pk} of alice: done"
    assert "    stored as   safetensors, safe" in rows
    assert "    hashes      computed here; agree with the file now" in rows
    assert "    matches     renamed (exact copy, renamed): Pretty LoRA, file pretty.safetensors" in rows
    assert "                  SHA256 equal to Civitai's file" in rows

    write_safetensors(model, payload=b"\x08" * 64)  # changed on disk since it was hashed
    assert "    hashes      computed here; differ from the file now: it changed, register it again" in \
        section(inspect_text(model), "In the catalog")


def test_dangerous_pickle_is_explained_and_never_run(model_root, tmp_path):
    canary = tmp_path / "canary"
    evil = HOSTILE["gadget_os_system"][0](model_root / "innocent.ckpt", canary)
    what = section(inspect_text(evil), "File")
    assert "  safety        dangerous: loading it with torch.load or pickle could run code: do not load it" in what
    assert any(row.startswith("  findings      dangerous: os.system: ") and "(at innocent.ckpt@" in row for row in what)
    assert "  globals       os.system" in what
    assert section(inspect_text(evil), "Tensor fingerprint") == [
        "  fingerprint   not computed: a file judged dangerous is never read further"]
    assert not canary.exists()


def test_truncated_and_corrupt_files_read_as_unreadable_with_the_reason(model_root):
    whole = write_model(model_root / "whole.safetensors", seed=4).read_bytes()
    truncated = model_root / "truncated.safetensors"
    truncated.write_bytes(whole[:5000])
    text = inspect_text(truncated)
    what = section(text, "File")
    assert any(row.startswith("  safety        unreadable: it could not be read to the end") for row in what)
    assert any("truncated: 3344 of 491528 data bytes present — an incomplete download?" in row for row in what), what
    assert section(text, "Tensor fingerprint") == ["  fingerprint   not computed: a file judged unreadable is never read further"]

    garbage = model_root / "garbage.ckpt"
    garbage.write_bytes(b"\x80\x02garbage\x00\xff" * 10)
    text = inspect_text(garbage)
    for mark in REPR_MARKS:
        assert mark not in text, (mark, text)
    what = section(text, "File")
    assert any(row.startswith("  safety        unreadable: it could not be read to the end") for row in what)
    assert "  findings      unreadable: broken pickle: text argument without a newline at byte 3 (at garbage.ckpt@3)" in what


def test_what_the_hash_engine_cannot_read_is_one_unreadable_line(model_root):
    fifo = model_root / "pipe.safetensors"
    os.mkfifo(fifo)
    assert section(inspect_text(fifo), "File") == [
        f"  path          {fifo}", f"  contents      unreadable: {fifo}: not a regular file (a FIFO (named pipe))"]


def test_missing_path_and_symlink_loop_are_command_errors_in_words(model_root):
    with pytest.raises(CommandError, match="no such file or folder"):
        inspect_text(model_root / "nope.safetensors")
    (model_root / "a").symlink_to(model_root / "b")
    (model_root / "b").symlink_to(model_root / "a")
    with pytest.raises(CommandError, match=r"a: cannot open it \(Too many levels of symbolic links\)"):
        inspect_text(model_root / "a")


def test_hostile_names_reach_the_terminal_escaped(model_root):
    named = write_safetensors(model_root / "evil\x1b[2J\x1b]0;owned\x07name.safetensors")
    # A global whose name carries an escape sequence ends up in the findings and the globals list.
    (model_root / "sneaky.ckpt").write_bytes(pickle_of(call(glob("os", "system\x1b[31m"), s("true"))))
    for path in (named, model_root / "sneaky.ckpt"):
        text = inspect_text(path)
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", text), repr(text)
    assert "evil\\x1b[2J\\x1b]0;owned\\x07name.safetensors" in inspect_text(named)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_every_hostile_file_renders_in_words(model_root, tmp_path, name):
    path = HOSTILE[name][0](model_root / name, tmp_path / "canary")
    text = inspect_text(path)
    assert "Traceback" not in text and "b'" not in text and "{'" not in text
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", text), repr(text)
    assert not (tmp_path / "canary").exists()


def test_diffusers_folder_lists_each_weight_file_with_its_hashes(model_root):
    pipe = model_root / "pipe"
    (pipe / "unet").mkdir(parents=True)
    (pipe / "model_index.json").write_text('{"unet": ["diffusers", "UNet2DConditionModel"]}')
    weights = write_safetensors(pipe / "unet" / "diffusion_pytorch_model.safetensors", payload=b"\x05" * 4096)
    text = inspect_text(pipe)
    assert text.startswith("Folder\n")
    assert "  format        diffusers: one model in several weight files, with their configs" in text
    hashes = section(text, "Hashes (Civitai form, per weight file)")
    assert hashes[0].startswith("  folder digest ")
    assert f"  unet/diffusion_pytorch_model.safetensors  ({weights.stat().st_size / 1024:.1f} KiB)" in hashes
    assert f"    SHA256  {hashlib.sha256(weights.read_bytes()).hexdigest().upper()}" in hashes


def test_json_form_is_the_raw_report(model_root, user):
    model = write_safetensors(model_root / "a.safetensors")
    hashed(model, user)
    out = io.StringIO()
    call_command("inspect", str(model), "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert list(report) == ["path", "hashes", "hash_cache_hit", "format", "safety", "fingerprint", "self_description",
                            "architecture", "registered"]
    assert (report["architecture"]["family"], report["architecture"]["kind"]) == ("unknown", "unknown")  # one U8 "w"
    assert report["hashes"]["SHA256"] == hashlib.sha256(model.read_bytes()).hexdigest().upper()
    assert report["safety"] == {"verdict": "safe", "findings": [], "globals": []}
    [row] = report["registered"]
    assert set(row) == {"id", "owner", "status", "error", "format", "safety_verdict", "content_id", "precision_id", "bf16_id", "fp8_id", "e5m2_id", "folded_id",
                        "hashes", "hashes_source", "folder_digest", "matches"}
