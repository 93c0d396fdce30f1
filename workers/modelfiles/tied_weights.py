"""Tied weights: one tensor saved under two names counts once in a fingerprint. PURE.

HF's T5EncoderModel ties `encoder.embed_tokens.weight` to `shared.weight` (the same Parameter).
`save_pretrained` writes it once (transformers drops the tied alias before safetensors, which
refuses shared storage), but many single files carry both names: ComfyUI's and kohya's T5-XXL
exports, all-in-one Flux/SD3 checkpoints (`text_encoders.t5xxl.transformer.`), and every torch.save
of a state_dict. Digesting both would give the same encoder two t5xxl ids, one per habit.

So a name on the right of TIED is dropped when the name on its left, under the same prefix and in
the same component, held exactly the same content (same digest: equal bytes, dtype and shape).
An alias whose content differs is a different weight (an untied fine-tune) and is kept. Which of
the two arrives first does not matter: the second of two equal tensors is the one dropped.
"""
from __future__ import annotations

# name -> the name it is tied to; both are suffixes after the model's own prefix.
TIED: dict[str, str] = {
    "encoder.embed_tokens.weight": "shared.weight",  # transformers T5EncoderModel / T5Model
}
_BOTH = {**TIED, **{v: k for k, v in TIED.items()}}


def _split(name: str) -> tuple[str, str] | None:
    """(prefix, suffix) when `name` ends with a tied name at a dotted boundary."""
    for suffix in _BOTH:
        if name == suffix or name.endswith("." + suffix):
            return name[: len(name) - len(suffix)], suffix
    return None


class TiedWeights:
    """Remembers the content digest of each tied name seen; says when a tensor repeats its partner."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str, str], str] = {}  # (component, prefix, suffix) -> content digest

    def repeats_partner(self, name: str, component: str, content: str) -> bool:
        split = _split(name)
        if split is None:
            return False
        prefix, suffix = split
        partner = self._seen.get((component, prefix, _BOTH[suffix]))
        if partner is not None and partner == content:
            return True
        self._seen[(component, prefix, suffix)] = content
        return False
