"""A kohya LoRA and its PEFT copy (made by diffusers' own converter) through register -> hashing -> analysis."""

import json

import pytest
import safetensors.torch
import torch
from django.core.management import call_command
from django.test import Client
from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya

from models_catalog.models import LocalFile, Match
from models_catalog.services.duplicates import duplicate_groups
from tests.model_builders import write_safetensors
from tests.factories import published_on_civitai, register_root_and_hash
from tests.model_builders import flux_kohya, peft_lora
from workers.modelfiles.fingerprint import FINGERPRINT_VERSION

pytestmark = pytest.mark.django_db


def save(path, sd):
    safetensors.torch.save_file({k: v.clone().contiguous() for k, v in sd.items()}, str(path))  # converters share A
    return path


def test_a_kohya_lora_and_its_peft_copy_are_one_lora_converted(model_root, user, sent_for_hashing):
    peft = peft_lora(seed=7)
    kohya = save(model_root / "my_style_kohya.safetensors", convert_state_dict_to_kohya(dict(peft)))
    save(model_root / "my_style_peft.safetensors", peft)
    save(model_root / "another_style_peft.safetensors", peft_lora(seed=8))
    published_on_civitai(kohya, model="My Style LoRA", version="v1", external_id=15)
    files = register_root_and_hash(model_root, user, sent_for_hashing)
    k, p, other = files["my_style_kohya.safetensors"], files["my_style_peft.safetensors"], files["another_style_peft.safetensors"]
    assert (k.architecture_kind, p.architecture_kind) == ("lora_kohya", "lora_peft")
    assert k.content_id == p.content_id != other.content_id
    [m] = Match.objects.filter(local_file=p)
    assert m.kind == Match.Kind.CONVERTED and m.source_file.version.model.name == "My Style LoRA"
    assert "LoRA (kohya)" in m.evidence and "LoRA (PEFT/diffusers)" in m.evidence
    assert not Match.objects.filter(local_file=other).exists()  # an unrelated LoRA stays unrelated
    [group] = duplicate_groups(owner=user)
    members = {mem.name: mem for mem in group.members}
    assert set(members) == {"my_style_kohya.safetensors", "my_style_peft.safetensors"}
    peft_member = members["my_style_peft.safetensors"]
    assert members["my_style_kohya.safetensors"].match == "keep"
    assert peft_member.match == "converted" and "LoRA (PEFT/diffusers)" in peft_member.evidence
    client = Client()
    client.force_login(user)
    page = client.get(f"/files/{p.pk}/").content.decode()
    assert "Converted copy of My Style LoRA" in page


def test_refingerprint_links_a_kohya_lora_stored_by_version_3(model_root, user, sent_for_hashing):
    """Version 3 digested the kohya file's alphas, so its content_id was not its PEFT copy's."""
    peft = peft_lora(seed=9)
    kohya = save(model_root / "old_kohya.safetensors", convert_state_dict_to_kohya(dict(peft)))
    save(model_root / "old_peft.safetensors", peft)
    published_on_civitai(kohya, model="Old LoRA", version="v1", external_id=16)
    files = register_root_and_hash(model_root, user, sent_for_hashing)
    k, p = files["old_kohya.safetensors"], files["old_peft.safetensors"]
    good = k.content_id
    LocalFile.objects.filter(pk=k.pk).update(fingerprint={**k.fingerprint, "version": 3}, content_id="v3" + good[2:])
    Match.objects.filter(local_file=p).delete()
    call_command("refingerprint", "--user", user.username)
    k.refresh_from_db()
    assert k.content_id == good and k.fingerprint["version"] == FINGERPRINT_VERSION
    assert Match.objects.get(local_file=p).kind == Match.Kind.CONVERTED


def test_a_peft_copy_that_lost_the_alphas_is_related_not_the_same(model_root, user, sent_for_hashing):
    """alpha != rank scales the LoRA: a copy without it (diffusers keeps alphas out of the state dict) has
    the same matrices and another effect."""
    peft = peft_lora(seed=10, scale=100)  # big enough that the alphas are < 0.1% of the bytes, as in real LoRAs
    kohya_sd = {k: (torch.tensor(1.0) if k.endswith(".alpha") else v)
                for k, v in convert_state_dict_to_kohya(dict(peft)).items()}
    kohya = save(model_root / "scaled_kohya.safetensors", kohya_sd)
    save(model_root / "scaled_peft.safetensors", peft)
    published_on_civitai(kohya, model="Scaled LoRA", version="v1", external_id=17)
    files = register_root_and_hash(model_root, user, sent_for_hashing)
    k, p = files["scaled_kohya.safetensors"], files["scaled_peft.safetensors"]
    assert k.content_id != p.content_id
    assert k.fingerprint["components"]["lora"]["content_id"] == p.fingerprint["components"]["lora"]["content_id"]
    [m] = Match.objects.filter(local_file=p)
    assert m.kind == Match.Kind.PARTIAL and "the same LoRA matrices" in m.evidence and "other alphas" in m.evidence
    assert m.share >= 0.999


def test_a_peft_copy_that_keeps_its_alphas_in_metadata_is_the_kohya_lora_converted(model_root, user, sent_for_hashing,
                                                                                   capsys):
    """diffusers' save_lora_weights keeps the LoraConfig (lora_alpha per model) in the safetensors metadata."""
    peft = peft_lora(seed=11, scale=100)
    kohya_sd = {k: (torch.tensor(1.0) if k.endswith(".alpha") else v)
                for k, v in convert_state_dict_to_kohya(dict(peft)).items()}
    kohya = save(model_root / "kept_kohya.safetensors", kohya_sd)
    config = {f"{model}.{key}": value for model in ("unet", "text_encoder", "text_encoder_2")
              for key, value in (("r", 4), ("lora_alpha", 1.0), ("alpha_pattern", {}), ("use_rslora", False))}
    safetensors.torch.save_file({k: v.contiguous() for k, v in peft.items()}, str(model_root / "kept_peft.safetensors"),
                                metadata={"format": "pt", "lora_adapter_metadata": json.dumps(config)})
    published_on_civitai(kohya, model="Kept LoRA", version="v1", external_id=18)
    files = register_root_and_hash(model_root, user, sent_for_hashing)
    k, p = files["kept_kohya.safetensors"], files["kept_peft.safetensors"]
    assert k.content_id == p.content_id and "lora_alpha" in p.fingerprint["components"]
    assert Match.objects.get(local_file=p).kind == Match.Kind.CONVERTED

    # Version 5 changed only LoRAs (PEFT alphas, kohya folded ids): refingerprint reads those version-4
    # rows again, and leaves a version-4 checkpoint alone.
    write_safetensors(model_root / "checkpoint.safetensors")
    files = register_root_and_hash(model_root, user, sent_for_hashing)
    for lf in LocalFile.objects.filter(owner=user):
        LocalFile.objects.filter(pk=lf.pk).update(fingerprint={**lf.fingerprint, "version": 4})
    call_command("refingerprint", "--user", user.username, "--dry-run")
    assert "2 file(s) would be read again" in capsys.readouterr().out


@pytest.mark.parametrize("published", ["kohya", "diffusers"])
def test_a_kohya_flux_lora_and_diffusers_folded_conversion_are_one_lora_converted(model_root, user, sent_for_hashing,
                                                                                  published):
    """diffusers' kohya Flux converter multiplies the weights by alpha / rank: new values, linked by folded_id."""
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers

    kohya_sd = {k: (torch.tensor(0.5) if k.endswith(".alpha") else v) for k, v in flux_kohya(seed=12).items()}
    paths = {"kohya": save(model_root / "flux_style_kohya.safetensors", kohya_sd),
             "diffusers": save(model_root / "flux_style_diffusers.safetensors",
                               _convert_kohya_flux_lora_to_diffusers({k: v.clone() for k, v in kohya_sd.items()}))}
    published_on_civitai(paths[published], model="Flux Style", version="v1", external_id=19)
    files = register_root_and_hash(model_root, user, sent_for_hashing)
    k, d = files["flux_style_kohya.safetensors"], files["flux_style_diffusers.safetensors"]
    assert k.content_id != d.content_id and k.folded_id == d.content_id
    other = d if published == "kohya" else k
    [m] = Match.objects.filter(local_file=other)
    assert m.kind == Match.Kind.CONVERTED and "alphas folded into the weights" in m.evidence
    # Which way it went: the diffusers file was converted from the kohya one, never the other way round.
    assert ("kohya original of" in m.evidence) == (other is k)
    client = Client()
    client.force_login(user)
    page = client.get(f"/files/{other.pk}/").content.decode()
    assert "Converted copy of Flux Style" in page
    assert ("Folded id" in client.get(f"/files/{k.pk}/").content.decode())
    # The duplicates page: one LoRA, the other copy converted (lossless to delete while the keeper stays).
    [group] = duplicate_groups(owner=user)
    members = {mem.name: mem for mem in group.members}
    assert set(members) == {"flux_style_kohya.safetensors", "flux_style_diffusers.safetensors"}
    [copy] = [mem for mem in group.members if mem.match != "keep"]
    assert copy.match == "converted" and "alphas folded into the weights" in copy.evidence
    assert ("kohya original of" in copy.evidence) == (copy.name == "flux_style_kohya.safetensors")
    assert copy.reclaim == "lossless"
