"""Architecture through the pipeline: stored by analysis, shown and filtered on My files and the API,
filled for old rows by refingerprint, and per-family components found as shared ("partial") matches."""
import hashlib

import numpy as np
import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from models_catalog.models import LocalComponent, LocalFile, Match, Source, SourceFile, SourceModel, SourceVersion
from tests.factories import register_root_and_hash
from tests.fakes.demo_library import safetensors_bytes

pytestmark = pytest.mark.django_db

MD = "model.diffusion_model."
T5 = {"encoder.block.0.layer.0.SelfAttention.q.weight": (8, 4096), "shared.weight": (16, 4096)}  # XXL width, most bytes
FLUX = {MD + "double_blocks.0.img_attn.qkv.weight": (24, 8), "vae.decoder.conv_in.weight": (8, 16, 3, 3),
        "text_encoders.clip_l.transformer.text_model.embeddings.token_embedding.weight": (4, 768),
        **{"text_encoders.t5xxl.transformer." + k: shape for k, shape in T5.items()}}
KOHYA_XL = {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 2048),
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight": (640, 4)}


def arrays(spec, seed=1):
    rng = np.random.default_rng(seed)
    return {k: ("F32", rng.standard_normal(shape, dtype=np.float32)) for k, shape in spec.items()}


@pytest.fixture
def library(model_root, user, sent_for_hashing):
    flux = arrays(FLUX)
    aio = model_root / "a-flux1-dev-aio.safetensors"
    aio.write_bytes(safetensors_bytes(flux))
    t5 = {k.removeprefix("text_encoders.t5xxl.transformer."): v for k, v in flux.items() if k.startswith("text_encoders.t5")}
    (model_root / "t5xxl_fp16.safetensors").write_bytes(safetensors_bytes(t5))
    (model_root / "style.safetensors").write_bytes(safetensors_bytes(arrays(KOHYA_XL)))
    model = SourceModel.objects.create(source=Source.CIVITAI, external_id="7", name="Flux AIO")
    version = SourceVersion.objects.create(model=model, external_id="70", name="dev")
    SourceFile.objects.create(version=version, external_id="700", name=aio.name,
                              sha256=hashlib.sha256(aio.read_bytes()).hexdigest())
    return register_root_and_hash(model_root, user, sent_for_hashing)


def test_analysis_stores_family_kind_and_evidence(library):
    aio, t5, lora = library["a-flux1-dev-aio.safetensors"], library["t5xxl_fp16.safetensors"], library["style.safetensors"]
    assert (aio.architecture_family, aio.architecture_kind) == ("Flux", "checkpoint")
    assert (t5.architecture_family, t5.architecture_kind) == ("unknown", "t5xxl")
    assert (lora.architecture_family, lora.architecture_kind) == ("SDXL", "lora_kohya")
    assert any("lora_down" in e for e in lora.architecture["evidence"])
    assert lora.self_description["type_guess"] == "LoRA" and lora.self_description["base_guess"] == "SDXL"
    assert sorted(c.name for c in LocalComponent.objects.filter(local_file=aio)) == ["t5xxl", "text_encoder",
                                                                                   "transformer", "vae"]


def test_a_standalone_t5_is_found_inside_the_identified_all_in_one_checkpoint(library):
    t5 = library["t5xxl_fp16.safetensors"]
    [m] = Match.objects.filter(local_file=t5)
    assert m.kind == "partial" and "shares t5xxl with" in m.evidence
    assert m.via_id == library["a-flux1-dev-aio.safetensors"].pk


def test_my_files_shows_the_badge_and_filters_by_family(client, user, library):
    client.force_login(user)
    page = client.get("/").content.decode()
    assert "Flux · checkpoint" in page and "SDXL · LoRA (kohya)" in page and "text encoder (T5-XXL)" in page
    only_xl = client.get("/", {"family": "SDXL"}).content.decode()
    assert "style.safetensors" in only_xl and "a-flux1-dev-aio.safetensors" not in only_xl
    only_t5 = client.get("/", {"kind": "t5xxl"}).content.decode()
    assert "t5xxl_fp16.safetensors" in only_t5 and "style.safetensors" not in only_t5


def test_the_file_page_shows_the_evidence(client, user, library):
    client.force_login(user)
    lora = library["style.safetensors"]
    page = client.get(f"/files/{lora.pk}/").content.decode()
    assert 'id="architecture"' in page and "LoRA (kohya)" in page
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight" in page
    # The self-description's guess comes from the same detector: its evidence is listed once, under
    # Architecture, which comes before "What the file says about itself".
    assert page.count(lora.architecture["evidence"][0]) == 1
    assert page.index('id="architecture"') < page.index('id="self-description"')


def test_the_api_lists_filters_and_details_the_architecture(user, library):
    api = APIClient()
    api.force_authenticate(user)
    rows = api.get("/api/v1/files/", {"family": "Flux"}).json()["results"]
    assert [(r["name"], r["family"], r["kind"]) for r in rows] == [("a-flux1-dev-aio.safetensors", "Flux", "checkpoint")]
    assert api.get("/api/v1/files/", {"family": "Pony"}).status_code == 400  # not a family we name
    detail = api.get(f"/api/v1/files/{rows[0]['id']}/").json()["architecture"]
    assert detail["kind_label"] == "checkpoint" and detail["encoders"] == ["clip_l", "t5xxl"]
    assert detail["evidence"] and "double_blocks" in detail["evidence"][0]


def test_refingerprint_fills_old_rows_and_renames_their_components(user, library, capsys):
    t5 = library["t5xxl_fp16.safetensors"]
    # As analysis stored it before detection: no architecture, and T5 under SDXL's second slot.
    LocalFile.objects.filter(pk=t5.pk).update(architecture=None, architecture_family="", architecture_kind="")
    LocalComponent.objects.filter(local_file=t5).update(name="text_encoder_2")
    call_command("refingerprint", "--user", user.username, "--dry-run")
    assert "1 file(s) would be read again" in capsys.readouterr().out
    call_command("refingerprint", "--user", user.username)
    t5.refresh_from_db()
    assert t5.architecture_kind == "t5xxl" and t5.architecture["kind_label"] == "text encoder (T5-XXL)"
    assert [c.name for c in LocalComponent.objects.filter(local_file=t5)] == ["t5xxl"]
    assert Match.objects.get(local_file=t5).kind == "partial"
    call_command("refingerprint", "--user", user.username, "--dry-run")
    assert "0 file(s) would be read again" in capsys.readouterr().out
