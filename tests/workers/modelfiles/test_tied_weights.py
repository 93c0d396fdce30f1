"""T5's tied embedding: the same encoder saved with one name or both gets one t5xxl id.

Built with transformers' real T5EncoderModel (tiny random config): `save_pretrained` writes the tied
weight once, a plain state_dict (what ComfyUI / kohya exports and torch.save hold) has it twice."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

from workers.modelfiles.fingerprint import fingerprint_path  # noqa: E402
from workers.modelfiles.tied_weights import TiedWeights  # noqa: E402


def t5_encoder(seed: int):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=2, tie_word_embeddings=True)
    return T5EncoderModel(config)


def both_names(model) -> dict:
    sd = model.state_dict()
    assert sd["shared.weight"].data_ptr() == sd["encoder.embed_tokens.weight"].data_ptr()  # one Parameter
    return {k: v.clone().contiguous() for k, v in sd.items()}


def test_a_t5_saved_with_and_without_its_tied_alias_has_one_t5xxl_id(tmp_path):
    model = t5_encoder(0)
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)  # transformers drops the alias
    [hf_file] = (tmp_path / "hf").glob("*.safetensors")
    save_file(both_names(model), str(tmp_path / "t5xxl_both.safetensors"))
    comfy = {"text_encoders.t5xxl.transformer." + k: v for k, v in both_names(model).items()}
    save_file(comfy, str(tmp_path / "aio_t5.safetensors"))
    torch.save(both_names(model), tmp_path / "t5.pt")

    hf, both, aio, pt = (fingerprint_path(p) for p in (hf_file, tmp_path / "t5xxl_both.safetensors",
                                                        tmp_path / "aio_t5.safetensors", tmp_path / "t5.pt"))
    assert hf.tensors == both.tensors == aio.tensors == pt.tensors  # the alias is not counted
    assert both.ignored_tensors == hf.ignored_tensors + 1
    assert hf.components["t5xxl"].content_id == both.components["t5xxl"].content_id \
        == aio.components["t5xxl"].content_id == pt.components["t5xxl"].content_id
    assert hf.content_id == both.content_id == pt.content_id


def test_an_untied_embedding_that_differs_is_kept(tmp_path):
    model = t5_encoder(0)
    untied = both_names(model)
    untied["encoder.embed_tokens.weight"] = untied["encoder.embed_tokens.weight"] + 1  # a fine-tune untied them
    save_file(untied, str(tmp_path / "untied.safetensors"))
    save_file(both_names(model), str(tmp_path / "tied.safetensors"))
    tied, other = fingerprint_path(tmp_path / "tied.safetensors"), fingerprint_path(tmp_path / "untied.safetensors")
    assert other.tensors == tied.tensors + 1 and other.content_id != tied.content_id


def test_only_the_same_prefix_and_component_ties():
    tied = TiedWeights()
    assert not tied.repeats_partner("a.shared.weight", "t5xxl", "d1")
    assert not tied.repeats_partner("b.encoder.embed_tokens.weight", "t5xxl", "d1")  # another model's prefix
    assert not tied.repeats_partner("a.encoder.embed_tokens.weight", "text_encoder", "d1")  # another component
    assert tied.repeats_partner("a.encoder.embed_tokens.weight", "t5xxl", "d1")
    assert not tied.repeats_partner("xshared.weight", "t5xxl", "d1")  # not at a dotted boundary


def test_converting_a_t5_checkpoint_with_both_names_verifies_against_the_catalogs_id(tmp_path):
    from workers.convert import convert_checkpoint

    model = t5_encoder(1)
    torch.save(model.state_dict(), tmp_path / "t5.pt")  # tied: one storage under two names
    source = fingerprint_path(tmp_path / "t5.pt")
    result = convert_checkpoint(tmp_path / "t5.pt", tmp_path / "t5.safetensors", expect_content_id=source.content_id)
    assert fingerprint_path(tmp_path / "t5.safetensors").content_id == source.content_id
    assert result.output
