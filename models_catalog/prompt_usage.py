"""What to paste into a UI to use a model: A1111's `<lora:NAME:1>` plus trigger words, ComfyUI's forms.

Django-free: a file name and a list of words in, strings out; the pages' copy buttons carry them.
"""
from __future__ import annotations

from dataclasses import dataclass

# Civitai types that A1111 loads with the <lora:...> syntax (LyCORIS/LoCon/DoRA too, since 1.5).
LORA_TYPES = {"lora", "locon", "lycoris", "dora"}


@dataclass(frozen=True)
class PromptUsage:
    words: str  # trigger words, comma-separated ("" without any): ComfyUI's prompt, or any UI
    a1111: str  # "<lora:NAME:1>, word, word" for a LoRA; the words alone otherwise
    comfy_lora_name: str  # LoraLoader's lora_name: the file name as it sits in models/loras/
    is_lora: bool


def prompt_usage(*, file_name: str, trained_words, model_type: str = "") -> PromptUsage:
    words = ", ".join(w.strip() for w in (trained_words or []) if isinstance(w, str) and w.strip())
    is_lora = model_type.lower() in LORA_TYPES
    # NAME is the stem: A1111 finds the LoRA by file name without its extension.
    stem = file_name.rsplit(".", 1)[0] if "." in file_name else file_name
    a1111 = ", ".join(x for x in (f"<lora:{stem}:1>" if is_lora else "", words) if x)
    return PromptUsage(words=words, a1111=a1111, comfy_lora_name=file_name if is_lora else "", is_lora=is_lora)
