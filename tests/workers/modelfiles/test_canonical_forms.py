"""Conversions that change tensors, not only names: fused attention, swapped halves, transposes, bf16 casts.

The converted side of each pair is made the way diffusers' single_file_utils converters make it (the
slicing, `swap_scale_shift` and `.T` they apply), on small random tensors; the names on each side are
the real key names of that layout.
"""
import numpy as np
import pytest
import torch

from workers.modelfiles.canonical_forms import canonical_parts
from workers.modelfiles.fingerprint import fingerprint_tensors
from workers.modelfiles.types import Tensor

rng = np.random.default_rng(7)


def t(name, array):
    dtype = {np.float32: "F32", np.float16: "F16"}[array.dtype.type]
    return Tensor(name=name, dtype=dtype, shape=tuple(array.shape), array=np.ascontiguousarray(array))


def fp(tensors):
    return fingerprint_tensors(tensors, component_of=lambda name: "x")


def rand(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def swap_scale_shift(w):  # diffusers: shift, scale = w.chunk(2, dim=0); cat([scale, shift])
    shift, scale = np.split(w, 2, axis=0)
    return np.concatenate([scale, shift], axis=0)


def test_openclip_fused_in_proj_and_transposed_projection_match_the_diffusers_split():
    d, p = 16, 8
    in_w, in_b, proj, out_w = rand(3 * d, d), rand(3 * d), rand(d, p), rand(d, d)
    pre = "conditioner.embedders.1.model."
    original = [t(pre + "transformer.resblocks.0.attn.in_proj_weight", in_w),
                t(pre + "transformer.resblocks.0.attn.in_proj_bias", in_b),
                t(pre + "transformer.resblocks.0.attn.out_proj.weight", out_w),
                t(pre + "text_projection", proj)]
    q, k, v = np.split(in_w, 3)
    qb, kb, vb = np.split(in_b, 3)
    enc = "text_model.encoder.layers.0.self_attn."
    diffusers = [t(enc + "q_proj.weight", q), t(enc + "k_proj.weight", k), t(enc + "v_proj.weight", v),
                 t(enc + "q_proj.bias", qb), t(enc + "k_proj.bias", kb), t(enc + "v_proj.bias", vb),
                 t(enc + "out_proj.weight", out_w), t("text_projection.weight", proj.T.copy())]
    a, b = fp(original), fp(diffusers)
    assert a.content_id == b.content_id and a.precision_id == b.precision_id and a.bf16_id == b.bf16_id
    # Without the rules the two sides would differ: the fused tensor is one digest, the split three.
    renamed = [Tensor(name="plain." + x.name.rsplit(".", 1)[-1], dtype=x.dtype, shape=x.shape, array=x.array)
               for x in original]
    assert fp(renamed).content_id != b.content_id


def test_flux_double_and_single_blocks_and_swapped_final_modulation_match_diffusers():
    h, mlp = 8, 32
    qkv_img, qkv_txt, lin1_w, lin1_b, ada = rand(3 * h, h), rand(3 * h, h), rand(3 * h + mlp, h), rand(3 * h + mlp), rand(2 * h, h)
    bfl = [t("double_blocks.0.img_attn.qkv.weight", qkv_img), t("double_blocks.0.txt_attn.qkv.weight", qkv_txt),
           t("single_blocks.0.linear1.weight", lin1_w), t("single_blocks.0.linear1.bias", lin1_b),
           t("final_layer.adaLN_modulation.1.weight", ada)]
    q, k, v = np.split(qkv_img, 3)
    aq, ak, av = np.split(qkv_txt, 3)
    sq, sk, sv, smlp = np.split(lin1_w, [h, 2 * h, 3 * h])
    bq, bk, bv, bmlp = np.split(lin1_b, [h, 2 * h, 3 * h])
    blk, single = "transformer_blocks.0.attn.", "single_transformer_blocks.0."
    diffusers = [t(blk + "to_q.weight", q), t(blk + "to_k.weight", k), t(blk + "to_v.weight", v),
                 t(blk + "add_q_proj.weight", aq), t(blk + "add_k_proj.weight", ak), t(blk + "add_v_proj.weight", av),
                 t(single + "attn.to_q.weight", sq), t(single + "attn.to_k.weight", sk),
                 t(single + "attn.to_v.weight", sv), t(single + "proj_mlp.weight", smlp),
                 t(single + "attn.to_q.bias", bq), t(single + "attn.to_k.bias", bk),
                 t(single + "attn.to_v.bias", bv), t(single + "proj_mlp.bias", bmlp),
                 t("norm_out.linear.weight", swap_scale_shift(ada))]
    assert fp(bfl).content_id == fp(diffusers).content_id
    changed = [*diffusers[:-1], t("norm_out.linear.weight", swap_scale_shift(ada) + 1)]
    assert fp(bfl).content_id != fp(changed).content_id  # other weights never collide


def test_sd3_fused_qkv_and_last_context_block_swap_match_diffusers():
    h = 8
    x_qkv, c_qkv, c_ada_mid, c_ada_last = rand(3 * h, h), rand(3 * h, h), rand(6 * h, h), rand(2 * h, h)
    sai = [t("joint_blocks.0.x_block.attn.qkv.weight", x_qkv), t("joint_blocks.0.context_block.attn.qkv.weight", c_qkv),
           t("joint_blocks.0.context_block.adaLN_modulation.1.weight", c_ada_mid),
           t("joint_blocks.1.context_block.adaLN_modulation.1.weight", c_ada_last)]
    attn = "transformer_blocks.0.attn."
    diffusers = [*(t(attn + f"to_{n}.weight", w) for n, w in zip("qkv", np.split(x_qkv, 3))),
                 *(t(attn + f"add_{n}_proj.weight", w) for n, w in zip("qkv", np.split(c_qkv, 3))),
                 t("transformer_blocks.0.norm1_context.linear.weight", c_ada_mid),
                 t("transformer_blocks.1.norm1_context.linear.weight", swap_scale_shift(c_ada_last))]
    assert fp(sai).content_id == fp(diffusers).content_id


def test_splits_are_views_and_odd_shapes_are_left_alone():
    fused = t("resblocks.3.attn.in_proj_weight", rand(12, 4))
    parts = canonical_parts(fused)
    assert [p.shape for p in parts] == [(4, 4)] * 3 and all(np.shares_memory(p.array, fused.array) for p in parts)
    odd = t("resblocks.3.attn.in_proj_weight", rand(10, 4))
    assert canonical_parts(odd) == [odd]
    assert canonical_parts(t("model.text_projection", rand(2, 3, 4)))[0].shape == (2, 3, 4)  # not 2-D: as is


SPECIALS = np.array([0.0, -0.0, 1.0, 1.00390625, 1.01171875, 3.3895313892515355e38, 3.4028235e38, 1e-40, -1e-45,
                     np.inf, -np.inf, np.nan, -np.nan], dtype=np.float32)


@pytest.mark.parametrize("values", [SPECIALS, rand(4096), rand(333) * 1e30, rand(100) * 1e-39])
def test_bf16_id_is_bit_exact_with_torch(values):
    full = fp([t("w", values)])
    as_bf16 = torch.from_numpy(values.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16).copy()
    as_bf16[np.isnan(values)] = 0x7FC0  # torch writes 0xFFFF or 0x7FC0 depending on its code path: one NaN here
    cast = fingerprint_tensors([Tensor(name="w", dtype="BF16", shape=values.shape, array=as_bf16)],
                               component_of=lambda name: "x")
    assert full.bf16_id == cast.bf16_id == cast.content_id
    assert full.content_id != cast.content_id


def test_bf16_nans_of_any_sign_or_payload_are_one_value():
    payloads = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFFFFFFF], dtype=np.uint32).view(np.float32)
    ids = {fp([t("w", np.full(3, x, dtype=np.float32))]).bf16_id for x in payloads}
    assert len(ids) == 1


def test_bf16_links_fp32_and_bf16_copies_but_not_fp16_ones():
    weights = [t("a", rand(64, 8)), t("b", rand(8))]
    bf16 = [Tensor(name=x.name, dtype="BF16", shape=x.shape,
                   array=torch.from_numpy(x.array.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16))
            for x in weights]
    half = [t(x.name, x.array.astype(np.float16)) for x in weights]
    f32, b16, f16 = fp(weights), fp(bf16), fp(half)
    assert f32.bf16_id == b16.bf16_id and f32.precision_id == f16.precision_id
    assert f16.bf16_id != f32.bf16_id  # fp16 is not cast to bf16: it holds other bits
