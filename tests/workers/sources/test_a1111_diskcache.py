"""A1111 >= 1.7's diskcache hash cache, built the way modules/cache.py and modules/hashes.py write it,
read without unpickling: values go through the restricted pickle interpreter or are skipped."""
import hashlib
import os
import pickle
import sqlite3
from pathlib import Path

import pytest

from workers.sources.a1111_diskcache import read_a1111_diskcache
from workers.sources.local_sidecars import find_sidecar_hashes

diskcache = pytest.importorskip("diskcache")


def make_cache(cache_dir: Path, subsection: str):
    # The exact options of A1111's modules/cache.make_cache.
    return diskcache.Cache(os.path.join(cache_dir, subsection), size_limit=2**32, disk_min_file_size=2**18)


def webui(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "webui"
    ckpt = root / "models" / "Stable-diffusion" / "sub" / "model.safetensors"
    lora = root / "models" / "Lora" / "style.safetensors"
    for path, data in ((ckpt, b"C" * 300), (lora, b"L" * 200)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    sums = {"ckpt": hashlib.sha256(ckpt.read_bytes()).hexdigest(), "lora": hashlib.sha256(lora.read_bytes()).hexdigest(),
            "addnet": hashlib.sha256(b"tensors only").hexdigest()}
    hashes = make_cache(root / "cache", "hashes")
    # modules/hashes.py: cache("hashes")[title] = {"mtime": os.path.getmtime(filename), "sha256": sha256}
    hashes["checkpoint/sub/model.safetensors"] = {"mtime": ckpt.stat().st_mtime, "sha256": sums["ckpt"]}
    hashes["lora/style"] = {"mtime": lora.stat().st_mtime, "sha256": sums["lora"]}
    hashes.close()
    addnet = make_cache(root / "cache", "hashes-addnet")
    addnet["lora/style"] = {"mtime": lora.stat().st_mtime, "sha256": sums["addnet"]}
    addnet.close()
    other = make_cache(root / "cache", "safetensors-metadata")  # A1111 keeps more subsections; no hashes there
    other["lora/style"] = {"mtime": 1.0, "value": {"ss_output_name": "style"}}
    other.close()
    return root, sums


def test_the_diskcache_folder_is_read_like_cache_json(tmp_path):
    root, sums = webui(tmp_path)
    found, errors = find_sidecar_hashes(root)
    by_name = {(f.model_path.name, bool(f.sha256)): f for f in found}
    assert by_name[("model.safetensors", True)].sha256 == sums["ckpt"]
    assert by_name[("model.safetensors", True)].mtime is not None and by_name[("model.safetensors", True)].size == 300
    assert by_name[("style.safetensors", True)].sha256 == sums["lora"]
    assert by_name[("style.safetensors", False)].autov3 == sums["addnet"]
    assert errors == []


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/modelxref-should-never-exist",))


def test_a_hostile_value_is_skipped_never_run(tmp_path):
    root, sums = webui(tmp_path)
    db = root / "cache" / "hashes" / "cache.db"
    con = sqlite3.connect(db)
    # Overwrite one entry with a pickle that would run a command if unpickled with pickle.loads.
    con.execute("UPDATE Cache SET value = ? WHERE key = ?", (pickle.dumps(_Boom()), "lora/style"))
    con.commit()
    con.close()
    notes: list[str] = []
    data = read_a1111_diskcache(root / "cache", problems=notes)
    assert set(data["hashes"]) == {"checkpoint/sub/model.safetensors"}
    assert any("'lora/style'" in n and "could not be read safely" in n for n in notes)
    assert not Path("/tmp/modelxref-should-never-exist").exists()


def test_import_hashes_command_reads_the_diskcache(tmp_path, settings, django_user_model, monkeypatch, db):
    from io import StringIO

    from django.core.management import call_command

    from models_catalog.models import FileHashes
    from models_catalog.services import import_hashes as import_service

    monkeypatch.setattr(import_service, "enqueue_identify", lambda _id: None)
    root, sums = webui(tmp_path)
    settings.MODEL_ROOTS = [tmp_path]
    user = django_user_model.objects.create_user("alice", password="pw-alice-123")
    call_command("import_hashes", str(root), "--user", user.username, stdout=StringIO())
    got = dict(FileHashes.objects.values_list("local_file__name", "sha256"))
    assert got == {"model.safetensors": sums["ckpt"], "style.safetensors": sums["lora"]}
