"""What a model file says about itself (PURE): its header metadata, and what its tensor names show.

Two sources, both read without running anything:
- safetensors `__metadata__` (kohya `ss_*`, `modelspec.*`): strings the file's author wrote.
  They are hostile input: every kept value is cut to a cap, the whole result stays under
  MAX_TOTAL_CHARS, and the one nested value we parse (ss_tag_frequency) is size-capped first.
- tensor names and shapes, seen one at a time as the fingerprint streams them, judged by the
  architecture detector (workers/modelfiles/architecture.py; `TensorEvidence` is its old name here),
  so a pickle checkpoint is described from what the restricted reader gives, never by loading it.

The type and base-model guesses come with their evidence: a guess nobody can check is worse than none.
Tensor evidence wins over metadata for the type (it is what the file holds); metadata fills in a base
model the tensors cannot tell.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from workers.modelfiles.architecture import LORA_KINDS, TEXT_ENCODER_KINDS, Architecture, ArchitectureDetector

MAX_VALUE_CHARS = 300  # one kept text value (titles, names, dates)
MAX_DESCRIPTION_CHARS = 1000  # modelspec.description
MAX_TAG_FREQUENCY_CHARS = 2 << 20  # larger ss_tag_frequency values are not parsed at all
MAX_TAG_CHARS = 80
TOP_TAGS = 20
MAX_TOTAL_CHARS = 16_000  # the stored JSON, whatever the header held
MAX_EVIDENCE = 12

TYPES = ("checkpoint", "LoRA", "LyCORIS", "VAE", "embedding", "text encoder", "diffusers", "unknown")
BASES = ("SD 1.x", "SD 2.x", "SDXL", "SD3", "Flux", "unknown")

# The tensor-based guesses are the architecture detector's (one answer for the whole app); this module
# keeps the metadata-based ones and maps the detector's words onto the type / base vocabulary above.
TensorEvidence = ArchitectureDetector

_TYPE_OF_KIND = {"checkpoint": "checkpoint", "unet": "checkpoint", "transformer": "checkpoint", "vae": "VAE",
                 "lycoris": "LyCORIS", "embedding": "embedding", "diffusers": "diffusers",
                 **{k: "LoRA" for k in LORA_KINDS}, **{k: "text encoder" for k in TEXT_ENCODER_KINDS}}
_BASE_OF_FAMILY = {"SDXL refiner": "SDXL"}  # Civitai files refiners under SDXL


@dataclass
class SelfDescription:
    type_guess: str = "unknown"
    base_guess: str = "unknown"
    evidence: list[str] = field(default_factory=list)
    title: str = ""  # modelspec.title, else ss_output_name
    output_name: str = ""
    architecture: str = ""
    author: str = ""
    date: str = ""
    description: str = ""
    base_model_version: str = ""  # ss_base_model_version as written
    sd_model_name: str = ""
    network_module: str = ""
    network_dim: str = ""
    network_alpha: str = ""
    resolution: str = ""
    num_epochs: str = ""
    epoch: str = ""
    training_started_at: str = ""
    top_tags: list[list] = field(default_factory=list)  # [[tag, count], ...], most frequent first
    capped: list[str] = field(default_factory=list)  # which values were cut or skipped, and why

    @property
    def name(self) -> str:
        return self.title or self.output_name

    @property
    def label(self) -> str:
        """'LoRA for SDXL: my_style_v3'; '' when the file says nothing useful about itself."""
        what = self.type_guess if self.type_guess != "unknown" else ""
        if what and self.base_guess != "unknown":
            what = f"{what} for {self.base_guess}"
        if what and self.name:
            return f"{what}: {self.name}"
        return what or self.name

    @property
    def search_words(self) -> str:
        """Title, output name and top tags: what My files' search matches (stored capped)."""
        words = [self.title, self.output_name, self.sd_model_name] + [str(t[0]) for t in self.top_tags]
        return " | ".join(w for w in dict.fromkeys(words) if w)[:1000]

    def to_json(self) -> dict:
        data = asdict(self)
        data["label"] = self.label
        # The caps above bound each value; this bounds the sum whatever a new field adds.
        while len(json.dumps(data)) > MAX_TOTAL_CHARS and data["top_tags"]:
            data["top_tags"] = data["top_tags"][:-1]
        if len(json.dumps(data)) > MAX_TOTAL_CHARS:
            data["description"] = ""
            data["capped"] = data["capped"] + ["description: dropped to keep the description small"]
        return data

    @classmethod
    def from_json(cls, data: dict | None) -> SelfDescription | None:
        if not isinstance(data, dict):
            return None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _text(meta: dict, key: str, out: SelfDescription, *, cap: int = MAX_VALUE_CHARS) -> str:
    value = meta.get(key)
    if not isinstance(value, str):
        return ""
    value = value.strip()
    if len(value) > cap:
        out.capped.append(f"{key}: {len(value)} characters, cut to {cap}")
        value = value[:cap]
    return value


def top_tags(raw: str, out: SelfDescription) -> list[list]:
    """ss_tag_frequency is {dataset_dir: {tag: count}}: counts summed over the folders."""
    if len(raw) > MAX_TAG_FREQUENCY_CHARS:
        out.capped.append(f"ss_tag_frequency: {len(raw)} characters, not read (limit {MAX_TAG_FREQUENCY_CHARS})")
        return []
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # deep nesting ends in RecursionError, not ValueError
        out.capped.append("ss_tag_frequency: not valid JSON")
        return []
    if not isinstance(data, dict):
        return []
    counts: dict[str, int] = {}
    for folder in data.values():
        if not isinstance(folder, dict):
            continue
        for tag, count in folder.items():
            if isinstance(count, bool) or not isinstance(count, (int, float)) or not isinstance(tag, str):
                continue
            tag = tag.strip()[:MAX_TAG_CHARS]
            if tag:
                counts[tag] = counts.get(tag, 0) + int(min(max(count, 0), 10**12))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_TAGS]
    return [[tag, count] for tag, count in ranked]


def _base_from_metadata(out: SelfDescription) -> tuple[str, str]:
    for key, raw in (("ss_base_model_version", out.base_model_version), ("modelspec.architecture", out.architecture)):
        v = raw.lower()
        if not v:
            continue
        if "flux" in v:
            base = "Flux"
        elif "sd3" in v or "stable-diffusion-3" in v:
            base = "SD3"
        elif "xl" in v:
            base = "SDXL"
        elif re.search(r"(sd_?v?2|stable-diffusion-v2)", v):
            base = "SD 2.x"
        elif re.search(r"(sd_?v?1|stable-diffusion-v1)", v):
            base = "SD 1.x"
        else:
            continue
        return base, f"{key} = {raw}"
    return "unknown", ""


def _type_from_metadata(out: SelfDescription) -> tuple[str, str]:
    module = out.network_module.lower()
    if "lycoris" in module:
        return "LyCORIS", f"ss_network_module = {out.network_module}"
    if module:
        return "LoRA", f"ss_network_module = {out.network_module}"
    arch = out.architecture.lower()
    for suffix, kind in (("/lora", "LoRA"), ("/lycoris", "LyCORIS"), ("/textual-inversion", "embedding"),
                         ("/vae", "VAE")):
        if arch.endswith(suffix) or f"{suffix}-" in arch:
            return kind, f"modelspec.architecture = {out.architecture}"
    return "unknown", ""


def _guesses_from_tensors(arch: Architecture) -> tuple[tuple[str, str], tuple[str, str]]:
    """((type, why), (base, why)) in this module's vocabulary, from the detector's answer."""
    kind = _TYPE_OF_KIND.get(arch.kind, "unknown")
    base = _BASE_OF_FAMILY.get(arch.family, arch.family)
    return (kind, arch.kind_why if kind != "unknown" else ""), (base, arch.family_why if base != "unknown" else "")


def describe(*, metadata: dict | None, evidence: ArchitectureDetector | None, fmt: str = "") -> SelfDescription:
    """The description of one file from its header metadata (may be None) and its tensor evidence."""
    meta = metadata if isinstance(metadata, dict) else {}
    out = SelfDescription()
    out.output_name = _text(meta, "ss_output_name", out)
    out.title = _text(meta, "modelspec.title", out) or out.output_name
    out.architecture = _text(meta, "modelspec.architecture", out)
    out.author = _text(meta, "modelspec.author", out)
    out.date = _text(meta, "modelspec.date", out)
    out.description = _text(meta, "modelspec.description", out, cap=MAX_DESCRIPTION_CHARS)
    out.base_model_version = _text(meta, "ss_base_model_version", out)
    out.sd_model_name = _text(meta, "ss_sd_model_name", out)
    out.network_module = _text(meta, "ss_network_module", out)
    out.network_dim = _text(meta, "ss_network_dim", out, cap=40)
    out.network_alpha = _text(meta, "ss_network_alpha", out, cap=40)
    out.resolution = _text(meta, "ss_resolution", out, cap=40) or _text(meta, "modelspec.resolution", out, cap=40)
    out.num_epochs = _text(meta, "ss_num_epochs", out, cap=20)
    out.epoch = _text(meta, "ss_epoch", out, cap=20)
    out.training_started_at = _text(meta, "ss_training_started_at", out, cap=40)
    if isinstance(meta.get("ss_tag_frequency"), str):
        out.top_tags = top_tags(meta["ss_tag_frequency"], out)

    arch = (evidence or ArchitectureDetector()).decide(fmt)
    (kind, why), (base, base_why) = _guesses_from_tensors(arch)
    meta_kind, meta_why = _type_from_metadata(out)
    if kind == "unknown" or (kind == "LoRA" and meta_kind == "LyCORIS"):  # LoCon keeps lora_ names
        kind, why = (meta_kind, meta_why) if meta_kind != "unknown" else (kind, why)
    meta_base, meta_base_why = _base_from_metadata(out)
    if base == "unknown":
        base, base_why = meta_base, meta_base_why
    out.type_guess, out.base_guess = kind, base
    out.evidence = [w for w in (why, "" if base_why and base_why in why else base_why) if w]
    for extra in (meta_why, meta_base_why):
        if extra and extra not in out.evidence:
            out.evidence.append(extra)
    out.evidence = out.evidence[:MAX_EVIDENCE]
    return out
