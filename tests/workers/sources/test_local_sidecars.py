import hashlib
import json
import os
import zlib
from pathlib import Path

import blake3
import pytest

from workers.sources.local_sidecars import (
    MAX_SIDECAR_BYTES,
    ImportedHashes,
    SidecarError,
    find_sidecar_hashes,
    parse_a1111_cache,
    parse_browser_plus_json,
    parse_civitai_info,
    parse_cm_info,
)


def write_model(path: Path, content: bytes) -> dict:
    """Write a stand-in model file and return its hashes the way Civitai prints them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    sha = hashlib.sha256(content).hexdigest()
    return {
        "SHA256": sha.upper(),
        "AutoV2": sha[:10].upper(),
        "BLAKE3": blake3.blake3(content).hexdigest().upper(),
        "CRC32": zlib.crc32(content).to_bytes(4, "little").hex().upper(),
        "AutoV3": hashlib.sha256(content[8:]).hexdigest()[:12].upper(),
        "size": len(content),
    }


def civitai_file(name, hashes, *, primary, size=None, fmt="SafeTensor", file_id=956231):
    size = hashes["size"] if size is None else size
    return {
        "id": file_id, "sizeKB": size / 1024, "name": name, "type": "Model",
        "pickleScanResult": "Success", "pickleScanMessage": "No Pickle imports",
        "virusScanResult": "Success", "virusScanMessage": None, "scannedAt": "2024-11-11T11:50:59.770Z",
        "metadata": {"format": fmt, "size": None, "fp": None},
        "hashes": {k: v for k, v in hashes.items() if k != "size"},
        "primary": primary, "downloadUrl": "https://civitai.com/api/download/models/1050496",
    }


def civitai_version(files):
    # Shape of GET /model-versions/by-hash/{hash}, as Civitai Helper saves it.
    return {
        "id": 1050496, "modelId": 706978, "name": "V.3", "createdAt": "2024-11-11T11:46:50.924Z",
        "status": "Published", "trainedWords": ["aesthetic_pos3"], "baseModel": "Flux.1 D",
        "description": "<p>New Triggers</p>", "air": "urn:air:flux1:lora:civitai:706978@1050496",
        "stats": {"downloadCount": 3426, "thumbsUpCount": 355},
        "model": {"name": "Realistic/Aesthetic Poses FluxDev", "type": "LORA", "nsfw": False, "poi": False},
        "files": files,
        "images": [{"url": "https://image.civitai.com/x/width=450/39539160.jpeg", "nsfwLevel": 2,
                    "width": 768, "height": 1280, "meta": {"seed": 1, "steps": 26}}],
        "downloadUrl": "https://civitai.com/api/download/models/1050496",
    }


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4), encoding="utf-8")
    return path


def expected_lower(h):
    return {
        "sha256": h["SHA256"].lower(), "autov2": h["AutoV2"].lower(), "blake3": h["BLAKE3"].lower(),
        "crc32": h["CRC32"].lower(), "autov3": h["AutoV3"].lower(),
    }


def hashes_of(found: ImportedHashes):
    return {k: getattr(found, k) for k in ("sha256", "autov2", "blake3", "crc32", "autov3")}


# --- SD Civitai Helper: <stem>.civitai.info -------------------------------------

def test_civitai_info_gives_lower_case_hashes_ids_and_the_file_size(tmp_path):
    h = write_model(tmp_path / "aeshteticv5.safetensors", b"A" * 3000)
    other = write_model(tmp_path / "unused.bin", b"B" * 5000)
    (tmp_path / "unused.bin").unlink()
    info = write_json(tmp_path / "aeshteticv5.civitai.info", civitai_version([
        civitai_file("aeshteticv5_fp32.ckpt", other, primary=True, fmt="PickleTensor", file_id=1),
        civitai_file("aeshteticv5.safetensors", h, primary=False),
    ]))
    found = parse_civitai_info(info)
    assert found.model_path == tmp_path / "aeshteticv5.safetensors"
    assert found.tool == "civitai-helper"
    assert found.size == 3000
    assert (found.civitai_model_id, found.civitai_version_id) == (706978, 1050496)
    assert hashes_of(found) == expected_lower(h)
    assert found.mtime is None


def test_civitai_info_for_a_renamed_model_picks_the_file_with_its_size(tmp_path):
    h = write_model(tmp_path / "my name.safetensors", b"C" * 4096)
    decoy = dict(h, SHA256="F" * 64, AutoV2="F" * 10, size=9999)
    info = write_json(tmp_path / "my name.civitai.info", civitai_version([
        civitai_file("original.safetensors", decoy, primary=True),
        civitai_file("original_fp16.safetensors", h, primary=False),
    ]))
    assert parse_civitai_info(info).sha256 == h["SHA256"].lower()


def test_civitai_info_describing_another_file_is_refused(tmp_path):
    h = write_model(tmp_path / "m.safetensors", b"D" * 2048)
    info = write_json(tmp_path / "m.civitai.info", civitai_version([
        civitai_file("m.safetensors", h, primary=True, size=2048 * 3),
    ]))
    with pytest.raises(SidecarError, match="another file"):
        parse_civitai_info(info)


def test_empty_civitai_info_means_not_on_civitai(tmp_path):
    write_model(tmp_path / "m.safetensors", b"x" * 10)
    assert parse_civitai_info(write_json(tmp_path / "m.civitai.info", {})) is None


def test_civitai_info_without_model_file_keeps_the_claimed_size(tmp_path):
    h = write_model(tmp_path / "elsewhere" / "gone.ckpt", b"E" * 1536)
    info = write_json(tmp_path / "gone.civitai.info", civitai_version([civitai_file("gone.ckpt", h, primary=True)]))
    found = parse_civitai_info(info)
    assert found.model_path == tmp_path / "gone.ckpt"
    assert found.size == 1536
    assert found.sha256 == h["SHA256"].lower()


@pytest.mark.parametrize("mutate, fragment", [
    (lambda v: v["files"][0]["hashes"].update(SHA256=12345), "hex string"),
    (lambda v: v["files"][0]["hashes"].update(SHA256="AB" * 20), "64 hex"),
    (lambda v: v["files"][0]["hashes"].update(CRC32="not-hex!"), "8 hex"),
    (lambda v: v["files"][0]["hashes"].update(AutoV2="0000000000"), "not the start of SHA256"),
    (lambda v: v.update(id=True), "boolean"),
    (lambda v: v.update(modelId="seven"), "numeric id"),
    (lambda v: v.update(files={"name": "x"}), "list of objects"),
    (lambda v: v["files"][0].update(sizeKB="big"), "sizeKB"),
])
def test_malformed_civitai_info_is_a_sidecar_error(tmp_path, mutate, fragment):
    h = write_model(tmp_path / "m.safetensors", b"F" * 100)
    version = civitai_version([civitai_file("m.safetensors", h, primary=True)])
    mutate(version)
    with pytest.raises(SidecarError) as err:
        parse_civitai_info(write_json(tmp_path / "m.civitai.info", version))
    assert fragment in str(err.value)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00garbage", b"[" * 100000, b"[1, 2]"])
def test_unreadable_json_is_a_sidecar_error(tmp_path, content):
    (tmp_path / "m.civitai.info").write_bytes(content)
    with pytest.raises(SidecarError):
        parse_civitai_info(tmp_path / "m.civitai.info")


# --- Stability Matrix: <stem>.cm-info.json --------------------------------------------

def cm_info(h, **overrides):
    info = {
        "ModelId": 4201, "ModelName": "Realistic Vision", "ModelDescription": "<p>photo</p>",
        "Nsfw": False, "Tags": ["photorealistic"], "ModelType": "Checkpoint",
        "VersionId": 130072, "VersionName": "V5.1", "VersionDescription": None,
        "AuthorUsername": "SG_161222", "BaseModel": "SD 1.5",
        "RemoteFileName": "realisticVisionV51_v51VAE.safetensors", "RemoteFileId": 113479,
        "FileMetadata": {"Fp": "fp16", "Size": "pruned", "Format": "SafeTensor"},
        "ImportedAt": "2024-03-02T10:11:12.1234567+00:00",
        "Hashes": {"SHA256": h["SHA256"], "CRC32": h["CRC32"], "BLAKE3": h["BLAKE3"]},
        "TrainedWords": None, "Stats": {"DownloadCount": 1, "RatingCount": 0, "Rating": 0},
        "UserTitle": None, "ThumbnailImageUrl": None, "InferenceDefaults": None, "Source": "Civitai",
    }
    info.update(overrides)
    return info


def test_cm_info_gives_hashes_and_ids_and_derives_autov2(tmp_path):
    h = write_model(tmp_path / "realisticVisionV51_v51VAE.safetensors", b"G" * 777)
    found = parse_cm_info(write_json(tmp_path / "realisticVisionV51_v51VAE.cm-info.json", cm_info(h)))
    assert found.tool == "stability-matrix"
    assert found.model_path == tmp_path / "realisticVisionV51_v51VAE.safetensors"
    assert found.size == 777
    assert (found.civitai_model_id, found.civitai_version_id) == (4201, 130072)
    assert found.sha256 == h["SHA256"].lower()
    assert found.autov2 == hashlib.sha256(b"G" * 777).hexdigest()[:10]
    assert found.blake3 == h["BLAKE3"].lower() and found.crc32 == h["CRC32"].lower()
    assert found.autov3 is None and found.autov1 is None


def test_cm_info_from_openmodeldb_has_no_civitai_ids(tmp_path):
    h = write_model(tmp_path / "4x-UltraSharp.pth", b"H" * 64)
    found = parse_cm_info(write_json(tmp_path / "4x-UltraSharp.cm-info.json", cm_info(
        h, ModelId=None, VersionId=None, RemoteFileName=None, Source="OpenModelDb",
        Hashes={"SHA256": h["SHA256"], "CRC32": None, "BLAKE3": None},
    )))
    assert found.model_path == tmp_path / "4x-UltraSharp.pth"
    assert (found.civitai_model_id, found.civitai_version_id, found.blake3) == (None, None, None)
    assert found.sha256 == h["SHA256"].lower()


@pytest.mark.parametrize("override, fragment", [
    ({"Hashes": ["SHA256"]}, "JSON object"),
    ({"Hashes": {"BLAKE3": "12"}}, "64 hex"),
    ({"VersionId": 1.5}, "numeric id"),
    ({"RemoteFileName": 5}, "RemoteFileName"),
])
def test_malformed_cm_info_is_a_sidecar_error(tmp_path, override, fragment):
    h = write_model(tmp_path / "m.safetensors", b"I" * 10)
    with pytest.raises(SidecarError) as err:
        parse_cm_info(write_json(tmp_path / "m.cm-info.json", cm_info(h, **override)))
    assert fragment in str(err.value)


# --- sd-civitai-browser-plus: <stem>.json ---------------------------------------------------

def test_browser_plus_json_gives_sha256_and_model_id(tmp_path):
    content = b"J" * 321
    write_model(tmp_path / "Lora" / "detail.safetensors", content)
    found = parse_browser_plus_json(write_json(tmp_path / "Lora" / "detail.json", {
        "activation text": "add_detail", "sha256": hashlib.sha256(content).hexdigest().upper(),
        "modelId": "58390",
    }))
    assert found.tool == "civitai-browser-plus"
    assert found.model_path == tmp_path / "Lora" / "detail.safetensors"
    assert found.size == 321
    assert found.sha256 == hashlib.sha256(content).hexdigest()
    assert found.autov2 == found.sha256[:10]
    assert (found.civitai_model_id, found.civitai_version_id) == (58390, None)


def test_browser_plus_json_with_only_an_id_still_counts(tmp_path):
    write_model(tmp_path / "m.ckpt", b"K")
    found = parse_browser_plus_json(write_json(tmp_path / "m.json", {"modelId": 7, "modelVersionId": 11}))
    assert (found.sha256, found.civitai_model_id, found.civitai_version_id) == (None, 7, 11)


def test_a1111_user_metadata_json_is_not_a_hash_source(tmp_path):
    write_model(tmp_path / "m.safetensors", b"L")
    user_metadata = {"description": "", "sd version": "SD1", "activation text": "x",
                     "preferred weight": 0.8, "notes": ""}
    assert parse_browser_plus_json(write_json(tmp_path / "m.json", user_metadata)) is None


@pytest.mark.parametrize("content, fragment", [
    ({"sha256": "abc"}, "64 hex"),
    ({"modelId": "fifty"}, "numeric id"),
    ({"modelId": -3}, "positive"),
    (["sha256"], "JSON object"),
])
def test_malformed_browser_plus_json_is_a_sidecar_error(tmp_path, content, fragment):
    write_model(tmp_path / "m.safetensors", b"M")
    with pytest.raises(SidecarError) as err:
        parse_browser_plus_json(write_json(tmp_path / "m.json", content))
    assert fragment in str(err.value)


# --- A1111 / Forge cache.json ---------------------------------------------------------------

def webui(tmp_path):
    """A webui root with a checkpoint in a subfolder, a LoRA, an embedding and a cache.json."""
    root = tmp_path / "stable-diffusion-webui"
    models = root / "models"
    ckpt = b"checkpoint bytes" * 10
    lora = b"lora bytes" * 7
    emb = b"embedding bytes"
    write_model(models / "Stable-diffusion" / "SD15" / "dreamshaper_8.safetensors", ckpt)
    write_model(models / "Lora" / "styles" / "add_detail.safetensors", lora)
    write_model(root / "embeddings" / "EasyNegative.pt", emb)
    sums = {
        "ckpt": hashlib.sha256(ckpt).hexdigest(),
        "lora_addnet": hashlib.sha256(lora[8:]).hexdigest(),
        "emb": hashlib.sha256(emb).hexdigest(),
        "vae": hashlib.sha256(b"vae").hexdigest(),
    }
    cache = {
        "hashes": {
            "checkpoint/SD15/dreamshaper_8.safetensors": {"mtime": 1700000000.5, "sha256": sums["ckpt"]},
            "textual_inversion/EasyNegative": {"mtime": 1690000000, "sha256": sums["emb"]},
            "vae": {"mtime": 1690000001.0, "sha256": sums["vae"]},
        },
        "hashes-addnet": {
            "lora/add_detail": {"mtime": 1695000000.25, "sha256": sums["lora_addnet"]},
        },
        "safetensors-metadata": {
            "lora/add_detail": {"mtime": 1695000000.25, "value": {"ss_network_dim": "32"}},
        },
    }
    return root, cache, sums


def test_a1111_cache_resolves_titles_under_the_models_folders(tmp_path):
    root, cache, sums = webui(tmp_path)
    problems = []
    found = parse_a1111_cache(write_json(root / "cache.json", cache), models_dir=root / "models", problems=problems)
    by_path = {f.model_path: f for f in found}
    ckpt = by_path[root / "models" / "Stable-diffusion" / "SD15" / "dreamshaper_8.safetensors"]
    assert (ckpt.tool, ckpt.sha256, ckpt.autov2, ckpt.mtime) == ("a1111-cache", sums["ckpt"], sums["ckpt"][:10], 1700000000.5)
    assert ckpt.size == len(b"checkpoint bytes" * 10)
    lora = by_path[root / "models" / "Lora" / "styles" / "add_detail.safetensors"]
    assert (lora.autov3, lora.sha256, lora.mtime) == (sums["lora_addnet"], None, 1695000000.25)
    emb = by_path[root / "embeddings" / "EasyNegative.pt"]
    assert emb.sha256 == sums["emb"] and emb.size == len(b"embedding bytes")
    assert len(found) == 3
    assert any("'vae'" in p for p in problems)


def test_a1111_cache_accepts_windows_titles_and_parsed_content(tmp_path):
    root, cache, sums = webui(tmp_path)
    cache["hashes"] = {"checkpoint/SD15\\dreamshaper_8.safetensors": {"mtime": 1, "sha256": sums["ckpt"].upper()}}
    found = parse_a1111_cache(cache, models_dir=root / "models")
    ckpt = [f for f in found if f.sha256][0]
    assert ckpt.model_path == root / "models" / "Stable-diffusion" / "SD15" / "dreamshaper_8.safetensors"
    assert ckpt.sha256 == sums["ckpt"]


def test_a1111_cache_checkpoint_outside_models_keeps_path_without_size(tmp_path):
    root, cache, sums = webui(tmp_path)
    cache["hashes"] = {"checkpoint/moved_away.ckpt": {"mtime": 1, "sha256": sums["ckpt"]}}
    cache["hashes-addnet"] = {}
    [found] = parse_a1111_cache(cache, models_dir=root / "models")
    assert found.model_path == root / "models" / "Stable-diffusion" / "moved_away.ckpt"
    assert found.size is None


def test_a1111_cache_skips_lora_names_it_cannot_pin_to_one_file(tmp_path):
    root, cache, sums = webui(tmp_path)
    write_model(root / "models" / "LyCORIS" / "add_detail.pt", b"other")
    cache["hashes-addnet"]["lora/missing_lora"] = {"mtime": 1, "sha256": sums["lora_addnet"]}
    problems = []
    found = parse_a1111_cache(cache, models_dir=root / "models", problems=problems)
    assert not any(f.autov3 for f in found)
    assert any("2 files share that name" in p for p in problems)
    assert any("missing_lora" in p for p in problems)


@pytest.mark.parametrize("mutate, fragment", [
    (lambda c: c.update(hashes=[1, 2]), "JSON object"),
    (lambda c: c["hashes"].update({"checkpoint/x": "abc"}), "JSON object"),
    (lambda c: c["hashes"].update({"checkpoint/x": {"mtime": "yesterday", "sha256": "a" * 64}}), "mtime"),
    (lambda c: c["hashes"].update({"checkpoint/x": {"mtime": 1, "sha256": "a" * 63}}), "64 hex"),
    (lambda c: c["hashes"].update({"checkpoint/../../../etc/passwd": {"mtime": 1, "sha256": "a" * 64}}), "outside"),
])
def test_malformed_a1111_cache_is_a_sidecar_error(tmp_path, mutate, fragment):
    root, cache, _ = webui(tmp_path)
    mutate(cache)
    with pytest.raises(SidecarError) as err:
        parse_a1111_cache(write_json(root / "cache.json", cache), models_dir=root / "models")
    assert fragment in str(err.value)


# --- walking a folder --------------------------------------------------------------------------

def test_find_sidecar_hashes_reads_every_tool_and_reports_bad_files(tmp_path):
    lib = tmp_path / "library"
    h1 = write_model(lib / "Lora" / "a.safetensors", b"1" * 111)
    write_json(lib / "Lora" / "a.civitai.info", civitai_version([civitai_file("a.safetensors", h1, primary=True)]))
    h2 = write_model(lib / "Stable-diffusion" / "b.safetensors", b"2" * 222)
    write_json(lib / "Stable-diffusion" / "b.cm-info.json", cm_info(h2))
    h3 = write_model(lib / "Stable-diffusion" / "c.ckpt", b"3" * 333)
    write_json(lib / "Stable-diffusion" / "c.json", {"sha256": h3["SHA256"], "modelId": 5})
    write_model(lib / "Lora" / "broken.safetensors", b"4")
    (lib / "Lora" / "broken.civitai.info").write_text("{\"id\": 12,", encoding="utf-8")
    write_model(lib / "Lora" / "unknown.safetensors", b"5")
    write_json(lib / "Lora" / "unknown.civitai.info", {})
    write_json(lib / "notes.json", {"sha256": "a" * 64})  # no model beside it: not a sidecar
    write_json(lib / "diffusers" / "model_index.json", {"_class_name": "StableDiffusionPipeline"})

    found, errors = find_sidecar_hashes(lib)
    by_name = {f.model_path.name: f for f in found}
    assert sorted(by_name) == ["a.safetensors", "b.safetensors", "c.ckpt"]
    assert by_name["a.safetensors"].sha256 == h1["SHA256"].lower() and by_name["a.safetensors"].size == 111
    assert by_name["b.safetensors"].blake3 == h2["BLAKE3"].lower() and by_name["b.safetensors"].size == 222
    assert by_name["c.ckpt"].sha256 == h3["SHA256"].lower() and by_name["c.ckpt"].size == 333
    assert [(p.name, "valid JSON" in e) for p, e in errors] == [("broken.civitai.info", True)]


def test_find_sidecar_hashes_reads_a_webui_cache_json(tmp_path):
    root, cache, sums = webui(tmp_path)
    write_json(root / "cache.json", cache)
    found, errors = find_sidecar_hashes(root)
    assert {f.sha256 for f in found if f.sha256} == {sums["ckpt"], sums["emb"]}
    assert [p.name for p, _ in errors] == ["cache.json"]  # the unresolvable 'vae' entry


def test_find_sidecar_hashes_skips_huge_files(tmp_path):
    write_model(tmp_path / "big.safetensors", b"x")
    with open(tmp_path / "big.civitai.info", "wb") as f:
        f.truncate(MAX_SIDECAR_BYTES + 1)
    assert find_sidecar_hashes(tmp_path) == ([], [])


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_find_sidecar_hashes_does_not_escape_through_symlinks(tmp_path):
    outside = tmp_path / "outside"
    h = write_model(outside / "secret.safetensors", b"S" * 50)
    write_json(outside / "secret.civitai.info", civitai_version([civitai_file("secret.safetensors", h, primary=True)]))
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "linked_dir").symlink_to(outside, target_is_directory=True)
    write_model(lib / "m.safetensors", b"S" * 50)
    (lib / "m.civitai.info").symlink_to(outside / "secret.civitai.info")
    assert find_sidecar_hashes(lib) == ([], [])

    # A symlinked sidecar that stays inside the root is fine.
    (lib / "real").mkdir()
    os.replace(outside / "secret.civitai.info", lib / "real" / "secret.civitai.info")
    (lib / "m.civitai.info").unlink()
    (lib / "m.civitai.info").symlink_to(lib / "real" / "secret.civitai.info")
    found, errors = find_sidecar_hashes(lib)
    assert [f.model_path for f in found] == [lib / "m.safetensors", lib / "real" / "secret.safetensors"]
    assert errors == []
