"""Rows and clients the catalog tests share: plain functions (fixtures live in conftest.py).

Hashes here are computed independently of the app (hashlib, zlib, blake3), so a test that
compares them with what the app computed checks the app.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import blake3
import numpy as np
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from rest_framework.test import APIClient

from models_catalog.identity import best_model_names_sync
from models_catalog.models import FileHashes, LocalFile, Match, Source, SourceFile, SourceModel, SourceVersion
from models_catalog.services.civitai_lookup import civitai_client
from models_catalog.services.hashing import local_file_hash, local_files_hash
from models_catalog.services.matching import local_components_sync
from models_catalog.services.register import local_file_register
from models_catalog.services.tokens import api_token_create
from tests.fakes.civitai import file_hashes
from tests.fakes.demo_library import safetensors_bytes
from workers.hashing import hash_file
from workers.sources.http import RetryPolicy

# --- API rows and clients -------------------------------------------------------------


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user)[1]}")
    return client


def hashes_of(data: bytes) -> dict[str, str]:
    """Hashes of `data` as lower-case hex, computed here with hashlib/zlib/blake3 (not the engine)."""
    sha = hashlib.sha256(data).hexdigest()
    # AutoV2 and SHA256_12 as the app derives them for every stored row (workers.kinds.with_derived).
    return {"sha256": sha, "autov2": sha[:10], "sha256_12": sha[:12], "crc32": f"{zlib.crc32(data):08x}",
            "blake3": blake3.blake3(data).hexdigest()}


def catalog_file(name="Dream Shaper", *, data=b"dream", source="civitai", type_="Checkpoint", base_model="SD 1.5",
                 words=("dreamy",)) -> SourceFile:
    model = SourceModel.objects.create(source=source, external_id=name, name=name, type=type_,
                                       url=f"https://civitai.com/models/{len(name)}")
    version = SourceVersion.objects.create(model=model, external_id=f"{name}-v1", name="v1", base_model=base_model,
                                           trained_words=list(words))
    return SourceFile.objects.create(version=version, external_id=f"{name}.safetensors", name=f"{name}.safetensors",
                                     size=len(data), **hashes_of(data))


def local_file(owner, name="a.safetensors", *, data: bytes | None = None, status="done", **fields) -> LocalFile:
    lf = LocalFile.objects.create(owner=owner, origin=fields.pop("origin", "registered"),
                                  path=f"/models/{owner.username}/{name}", name=name, status=status,
                                  size=len(data) if data is not None else None, **fields)
    if data is not None:
        FileHashes.objects.create(local_file=lf, size=len(data), **hashes_of(data))
    return lf


def match(lf: LocalFile, sf: SourceFile, kind="exact", evidence="SHA256 equal", via=None) -> Match:
    return Match.objects.create(local_file=lf, source_file=sf, kind=kind, evidence=evidence, via=via)


def error_of(resp) -> dict:
    """The one error format: {"error": {"code", "message", "detail"}}."""
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "detail"}, body
    return body["error"]


def push_record(tmp_path: Path, name: str, payload: bytes) -> dict:
    f = _write_safetensors(tmp_path / name, payload=payload)
    return {"path": f"D:\\models\\{name}", "hashes": hash_file(f).to_json(), "format": "safetensors",
            "safety": {"verdict": "safe", "findings": []}}



def _write_safetensors(path: Path, payload: bytes) -> Path:
    from tests.model_builders import write_safetensors

    return write_safetensors(path, payload=payload)


# --- page rows and clients ------------------------------------------------------------


def six_hashes_of(data: bytes) -> dict:
    """Six hash fields computed independently of the app (AutoV1/AutoV3 stand-ins are derived digests)."""
    sha = hashlib.sha256(data).hexdigest()
    return {
        "sha256": sha, "autov2": sha[:10], "sha256_12": sha[:12], "autov1": hashlib.sha256(b"v1" + data).hexdigest()[:8],
        "autov3": hashlib.sha256(b"v3" + data).hexdigest()[:12], "crc32": f"{zlib.crc32(data):08x}",
        "blake3": hashlib.blake2b(data, digest_size=32).hexdigest(),
    }


def seed_model(name, *, source="civitai", type="Checkpoint", base="SD 1.5", words=(), files=(), ext=None, **kw):
    model = SourceModel.objects.create(source=source, external_id=ext or f"{source}-{name}-{SourceModel.objects.count()}",
                                       name=name, type=type, url=f"https://example.test/models/{name}", **kw)
    version = SourceVersion.objects.create(model=model, external_id=f"v-{model.pk}", name=f"{name} v1", base_model=base,
                                           trained_words=list(words), url=f"https://example.test/versions/{model.pk}")
    made = []
    for i, spec in enumerate(files):
        spec = dict(spec)
        data = spec.pop("data")
        made.append(SourceFile.objects.create(version=version, external_id=str(i), **six_hashes_of(data), **spec))
    return model, version, made


def seed_local(owner, name, *, data=None, fmt="safetensors", verdict="safe", fingerprint=None, status="done", **kw):
    lf = LocalFile.objects.create(owner=owner, origin="registered", path=f"/m/{owner.username}/{name}", name=name,
                                  size=len(data or b"") or 100, status=status, format=fmt, safety_verdict=verdict,
                                  fingerprint=fingerprint, content_id=(fingerprint or {}).get("content_id", ""),
                                  precision_id=(fingerprint or {}).get("precision_id", ""), **kw)
    if data is not None:
        FileHashes.objects.create(local_file=lf, size=len(data), **six_hashes_of(data))
    return lf


def fp(dtype="F16", content="c1", precision="p1"):
    return {"content_id": content, "precision_id": precision, "tensors": 3, "parameters": 30, "nbytes": 60,
            "dtypes": {dtype: 3}, "components": {"unet": {"content_id": content, "precision_id": precision,
                                                          "tensors": 3, "parameters": 30, "nbytes": 60}}}


def login(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def page(client, url, **params) -> str:
    resp = client.get(url, params)
    assert resp.status_code == 200, resp.content[:500]
    return resp.content.decode()


# --- My files rows --------------------------------------------------------------------


def catalog_model_file(name: str, *, type_: str = "Checkpoint", base: str = "SD 1.5", version: str = "v1.0",
           words=("hb_style",), source: str = "civitai") -> SourceFile:
    model = SourceModel.objects.create(source=source, external_id=name, name=name, type=type_)
    v = SourceVersion.objects.create(model=model, external_id=f"{name}-{version}", name=version, base_model=base,
                                     trained_words=list(words))
    return SourceFile.objects.create(version=v, external_id=f"{name}.safetensors", name=f"{name}.safetensors")


def library_file(owner, name: str, *, folder: str = "/models", data: bytes | None = None, matches=(), **fields) -> LocalFile:
    fields.setdefault("status", "done")
    fields.setdefault("safety_verdict", "safe")
    lf = LocalFile.objects.create(owner=owner, origin="registered", path=f"{folder}/{name}", name=name, **fields)
    if data is not None:
        FileHashes.objects.create(local_file=lf, size=len(data), **hashes_of(data))
    for sf, kind in matches:
        Match.objects.create(local_file=lf, source_file=sf, kind=kind, evidence=f"{kind} evidence for {name}")
    if matches:
        best_model_names_sync(local_file_ids=[lf.pk])  # as matching.local_file_match does with its rows
    return lf


# --- registered and hashed files (duplicate actions) -----------------------------------

DUPLICATE_PAYLOAD = bytes(range(256)) * 64


def register_and_hash(owner, *paths) -> list[LocalFile]:
    outcome = local_file_register(paths=[str(p) for p in paths], owner=owner)
    assert not outcome.refused, outcome.refused
    for lf in outcome.queued:
        local_file_hash(local_file_id=lf.pk)
    rows = [LocalFile.objects.get(owner=owner, path=str(p.resolve())) for p in paths]
    for lf in rows:
        assert lf.status == "done", lf.error
    return rows


def register_root_and_hash(model_root, user, sent_for_hashing) -> dict[str, LocalFile]:
    """Register the whole root, hash what register sent (the `sent_for_hashing` fixture's ids); the user's rows by name."""
    outcome = local_file_register(paths=[str(model_root)], owner=user)
    assert not outcome.refused
    local_files_hash(local_file_ids=sent_for_hashing)
    return {lf.name: lf for lf in LocalFile.objects.filter(owner=user)}


# --- identification against the Civitai stand-in --------------------------------------


def client_for(fake, **kw):
    return civitai_client(base_url=fake.base_url, sleep=lambda s: None,
                          retry=RetryPolicy(base=0.01, cap=0.01, max_attempts=2), **kw)


def hashed(path: Path, owner) -> LocalFile:
    """A registered local file, hashed and analysed synchronously."""
    st = path.stat()
    lf = LocalFile.objects.create(owner=owner, origin="registered", path=str(path), name=path.name, size=st.st_size)
    local_file_hash(local_file_id=lf.pk)
    lf.refresh_from_db()
    assert lf.status == "done", lf.error
    return lf


def civitai_file(data: bytes, name: str, **meta) -> dict:
    n = int.from_bytes(data[:8], "little")
    return {
        "name": name,
        "hashes": file_hashes(
            sha256=hashlib.sha256(data).hexdigest(),
            autov3=hashlib.sha256(data[8 + n:]).hexdigest()[:12],
            crc32=zlib.crc32(data).to_bytes(4, "little").hex(),
            blake3=blake3.blake3(data).hexdigest(),
        ),
        "metadata": {"format": "SafeTensor", "fp": meta.get("fp", "fp16"), "size": "pruned"},
    }


def seed(fake, files: list[dict], *, name="Fake LoRA", type="LORA") -> int:
    model_id = fake.add_model(name=name, type=type)
    return fake.add_version(model_id, name="v1", base_model="SDXL 1.0", trained_words=["fakeword"], files=files)


def fingerprinted_file(owner, name, *, fmt, content_id, precision_id, sha, components=None) -> LocalFile:
    lf = LocalFile.objects.create(owner=owner, origin="pushed", path=f"/r/{name}", name=name, status="done", format=fmt,
                                  content_id=content_id, precision_id=precision_id, size=100,
                                  fingerprint={"components": components or {}})
    local_components_sync(local_file_id=lf.pk, fingerprint=lf.fingerprint)  # as the analysis and push services do
    FileHashes.objects.create(local_file=lf, size=100, sha256=sha, source="pushed")
    return lf


# --- a LoRA that describes itself (kohya metadata) -------------------------------------

SDXL_LORA = {
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 2048),
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight": (640, 4),
}
KOHYA = {
    "ss_output_name": "my_style_v3", "ss_base_model_version": "sdxl_base_v1-0", "ss_network_module": "networks.lora",
    "ss_network_dim": "16", "ss_network_alpha": "8", "ss_resolution": "(1024, 1024)", "ss_num_epochs": "10",
    "ss_epoch": "7", "ss_tag_frequency": json.dumps({"10_x": {"inkwash": 9, "mountain": 4}}),
    "modelspec.author": "Jo Painter", "modelspec.date": "2024-05-01",
}


def write_lora(path, *, seed=0, metadata=KOHYA):
    rng = np.random.default_rng(seed)
    state = {k: ("F32", rng.standard_normal(shape).astype(np.float32)) for k, shape in SDXL_LORA.items()}
    path.write_bytes(safetensors_bytes(state, metadata=metadata))
    return path


def published_on_civitai(path: Path, *, model: str, version: str = "v1", external_id: int) -> SourceFile:
    """The file at `path` as Civitai publishes it (by its SHA256): model `external_id`, its version
    `external_id * 10`, the file `external_id * 100`, under the file's own name."""
    source_model = SourceModel.objects.create(source=Source.CIVITAI, external_id=str(external_id), name=model)
    source_version = SourceVersion.objects.create(model=source_model, external_id=str(external_id * 10), name=version)
    return SourceFile.objects.create(version=source_version, external_id=str(external_id * 100), name=path.name,
                                     sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def migrated_to(target: tuple[str, str]):
    """Migrate the test database to `target` and return the app registry of that state (for migration tests;
    a transactional_db test, and it must end with migrated_to_latest())."""
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    return executor.loader.project_state([target]).apps


def migrated_to_latest() -> None:
    """Leave the schema as the other tests expect it."""
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
