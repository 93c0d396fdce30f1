"""The LoRA scale a PEFT / diffusers file keeps outside its tensors (PURE, hostile input).

kohya writes each module's `alpha` as a tensor; PEFT keeps it in its LoraConfig: `lora_alpha` for
every module, `alpha_pattern` (module name -> alpha) for the exceptions. That config travels

- inside the safetensors header: diffusers' `save_lora_adapter` writes the config as JSON under
  `__metadata__["lora_adapter_metadata"]` (diffusers loaders/lora_base.py LORA_ADAPTER_METADATA_KEY),
  and the pipelines' `save_lora_weights` the same with every key prefixed by its model
  (`_pack_dict_with_prefix`: "unet.lora_alpha", "transformer.alpha_pattern", "text_encoder.r", ...);
- or beside the file: PEFT's `save_pretrained` writes adapter_config.json next to
  adapter_model.safetensors / .bin (peft.utils.constants CONFIG_NAME).

`AlphaConfig.alpha_for(module)` answers a module's alpha (lora_forms.module_key form) so a PEFT copy
of a kohya LoRA with alpha != rank digests the same `lora_alpha` component as the kohya file
(lora_forms.LoraForms.finish). What is not understood is not guessed: rsLoRA (scale alpha / sqrt(r),
no kohya equivalent), a non-numeric or non-positive alpha, an alpha_pattern key that is a regular
expression rather than a module name (PEFT matches them as regexes; we never run a file's regex)
all leave that model's alpha unknown, which digests as today (no alpha component).
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass

from workers.modelfiles.lora_forms import module_key

METADATA_KEY = "lora_adapter_metadata"
CONFIG_NAME = "adapter_config.json"
MAX_CONFIG_BYTES = 1 << 20
MAX_PATTERNS = 10_000
# A module path: what get_peft_kwargs writes into alpha_pattern. Anything else is a regex: not run.
_PLAIN_MODULE = re.compile(r"^[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*$")
# The models diffusers' save_lora_weights prefixes keys with, as lora_forms groups their modules.
_PREFIXES = {"unet": "unet.", "transformer": "transformer.", "text_encoder": "text_encoder.",
             "text_encoder_2": "text_encoder_2.", "text_encoder_3": "text_encoder_3."}


@dataclass(frozen=True)
class _Scope:
    group: str  # lora_forms' group ("denoiser", "text_encoder", ...); "" applies to every module
    alpha: float
    patterns: tuple[tuple[str, float], ...]  # (module tokens, alpha), tokens as module_key writes them


@dataclass(frozen=True)
class AlphaConfig:
    scopes: tuple[_Scope, ...]
    source: str  # where it was read, for evidence: "safetensors metadata" / "adapter_config.json"

    def alpha_for(self, module: str) -> float | None:
        """The alpha a module (lora_forms.module_key form, "group:tokens") trains with, None if unknown."""
        group, _, tokens = module.partition(":")
        for scope in self.scopes:
            if scope.group not in ("", group):
                continue
            for pattern, alpha in scope.patterns:
                if tokens == pattern or tokens.endswith("." + pattern):
                    return alpha
            return scope.alpha
        return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value > 0 else None


def _scope(config: dict, group: str) -> _Scope | None:
    alpha = _number(config.get("lora_alpha"))
    if alpha is None or config.get("use_rslora") is True:
        return None
    patterns = config.get("alpha_pattern") or {}
    if not isinstance(patterns, dict) or len(patterns) > MAX_PATTERNS:
        return None
    plain = []
    for key, value in patterns.items():
        number = _number(value)
        if not isinstance(key, str) or not _PLAIN_MODULE.match(key) or number is None:
            return None  # one pattern we cannot apply makes every module's alpha uncertain
        plain.append((module_key(key).partition(":")[2], number))
    return _Scope(group=group, alpha=alpha, patterns=tuple(plain))


def parse_alpha_config(data: object, *, source: str) -> AlphaConfig | None:
    """A LoraConfig dict (adapter_config.json, save_lora_adapter metadata) or diffusers' prefixed one."""
    if not isinstance(data, dict):
        return None
    if "lora_alpha" in data:
        scope = _scope(data, "")
        return AlphaConfig(scopes=(scope,), source=source) if scope else None
    scopes = []
    for model, prefix in _PREFIXES.items():
        inner = {k[len(prefix):]: v for k, v in data.items() if isinstance(k, str) and k.startswith(prefix)}
        if inner:
            scope = _scope(inner, module_key(prefix).partition(":")[0])
            if scope is not None:
                scopes.append(scope)
    return AlphaConfig(scopes=tuple(scopes), source=source) if scopes else None


def _loads(text: str | bytes) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None


def from_metadata(metadata: dict[str, str]) -> AlphaConfig | None:
    raw = metadata.get(METADATA_KEY)
    if not isinstance(raw, str) or len(raw) > MAX_CONFIG_BYTES:
        return None
    return parse_alpha_config(_loads(raw), source="safetensors metadata")


def from_adapter_config(model_file: str | os.PathLike) -> AlphaConfig | None:
    """adapter_config.json in the model file's own folder: a regular file (a symlink is not followed,
    it could lead out of the model roots), at most 1 MiB."""
    path = os.path.join(os.path.dirname(os.fspath(model_file)), CONFIG_NAME)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(raw) > MAX_CONFIG_BYTES:
        return None
    return parse_alpha_config(_loads(raw), source=CONFIG_NAME)


__all__ = ["AlphaConfig", "CONFIG_NAME", "METADATA_KEY", "from_adapter_config", "from_metadata", "parse_alpha_config"]
