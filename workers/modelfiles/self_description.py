"""What a model file says about itself (PURE): its header metadata, and what its tensor names show.

Two sources, both read without running anything:
- safetensors `__metadata__` (kohya `ss_*`, `modelspec.*`): strings the file's author wrote.
  They are hostile input: every kept value is cut to a cap, the whole result stays under
  MAX_TOTAL_CHARS, and the one nested value we parse (ss_tag_frequency) is size-capped first.
- tensor names and shapes, seen one at a time as the fingerprint streams them (`TensorEvidence`),
  so a pickle checkpoint is described from what the restricted reader gives, never by loading it.

The type and base-model guesses come with their evidence: a guess nobody can check is worse than none.
Tensor evidence wins over metadata for the type (it is what the file holds); metadata fills in a base
model the tensors cannot tell.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

MAX_VALUE_CHARS = 300  # one kept text value (titles, names, dates)
MAX_DESCRIPTION_CHARS = 1000  # modelspec.description
MAX_TAG_FREQUENCY_CHARS = 2 << 20  # larger ss_tag_frequency values are not parsed at all
MAX_TAG_CHARS = 80
TOP_TAGS = 20
MAX_TOTAL_CHARS = 16_000  # the stored JSON, whatever the header held
MAX_EVIDENCE = 12

TYPES = ("checkpoint", "LoRA", "LyCORIS", "VAE", "embedding", "diffusers", "unknown")
BASES = ("SD 1.x", "SD 2.x", "SDXL", "SD3", "Flux", "unknown")

# Cross-attention context width -> base: the text encoder's output the UNet attends to.
_CONTEXT_DIMS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}
_VAE_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


@dataclass
class TensorEvidence:
    """Counts of tell-tale tensor names, kept as the tensors stream past (constant memory)."""

    tensors: int = 0
    lora: int = 0
    lycoris: int = 0
    embedding: int = 0
    vae_only: bool = True
    flux: int = 0
    sd3: int = 0
    sdxl: int = 0
    sd2: int = 0
    sd1: int = 0
    unet: int = 0
    context_dims: dict[int, int] = field(default_factory=dict)
    embedding_width: int = 0

    def observe(self, name: str, shape: tuple[int, ...]) -> None:
        self.tensors += 1
        n = name[:512]
        if "lora_down" in n or "lora_up" in n or "lora_A" in n or "lora_B" in n:
            self.lora += 1
        if "hada_w" in n or "lokr_w" in n or ".hada_" in n or ".lokr_" in n:
            self.lycoris += 1
        if n in ("emb_params", "clip_l", "clip_g") or n.startswith("string_to_param"):
            self.embedding += 1
            if len(shape) == 2 and n != "clip_g":
                self.embedding_width = int(shape[1])
            if n in ("clip_l", "clip_g"):
                self.sdxl += 1
        if not n.startswith(_VAE_PREFIXES):
            self.vae_only = False
        if "double_blocks" in n or "single_blocks" in n or "single_transformer_blocks" in n:
            self.flux += 1
        if "joint_blocks" in n:
            self.sd3 += 1
        if (n.startswith("conditioner.embedders.1") or "diffusion_model.label_emb" in n
                or n.startswith(("lora_te2_", "lora_te1_")) or "add_embedding.linear" in n):
            self.sdxl += 1
        if n.startswith("cond_stage_model.model.transformer") or "cond_stage_model.model.text_projection" in n:
            self.sd2 += 1  # OpenCLIP ViT-H text encoder
        if n.startswith("cond_stage_model.transformer.text_model"):
            self.sd1 += 1  # OpenAI CLIP ViT-L text encoder
        if "diffusion_model." in n or n.startswith("lora_unet_") or "down_blocks" in n:
            self.unet += 1
        # attn2 keys project the text context: their input width names the text encoder.
        if ("attn2" in n and ("to_k" in n or "to_v" in n) and len(shape) == 2
                and "lora_up" not in n and "lora_B" not in n):
            dim = int(shape[1])
            self.context_dims[dim] = self.context_dims.get(dim, 0) + 1

    def to_json(self) -> dict:
        return asdict(self)


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


def _type_from_tensors(ev: TensorEvidence, fmt: str) -> tuple[str, str]:
    if fmt == "diffusers":
        return "diffusers", "a diffusers folder (model_index.json and component folders)"
    if not ev.tensors:
        return "unknown", ""
    if ev.lycoris:
        return "LyCORIS", f"{ev.lycoris} LyCORIS tensors (hada_/lokr_)"
    if ev.lora:
        return "LoRA", f"{ev.lora} LoRA tensors (lora_down/lora_up or lora_A/lora_B)"
    if ev.embedding and ev.tensors <= 4:
        return "embedding", "textual-inversion tensors (emb_params / string_to_param / clip_l, clip_g)"
    if ev.vae_only:
        return "VAE", "only encoder / decoder / quant_conv tensors"
    if ev.unet or ev.flux or ev.sd3:
        return "checkpoint", f"a full denoiser ({ev.tensors} tensors)"
    return "unknown", ""


def _base_from_tensors(ev: TensorEvidence) -> tuple[str, str]:
    if ev.flux:
        return "Flux", f"{ev.flux} Flux transformer tensors (double_blocks / single_blocks)"
    if ev.sd3:
        return "SD3", f"{ev.sd3} SD3 MMDiT tensors (joint_blocks)"
    if ev.sdxl:
        return "SDXL", f"{ev.sdxl} SDXL tensors (second text encoder / label_emb / clip_g)"
    if ev.context_dims:
        dim = max(ev.context_dims, key=ev.context_dims.get)
        if dim in _CONTEXT_DIMS:
            return _CONTEXT_DIMS[dim], f"cross-attention context width {dim}"
    if ev.sd2:
        return "SD 2.x", "OpenCLIP text encoder keys (cond_stage_model.model.transformer)"
    if ev.sd1:
        return "SD 1.x", "CLIP ViT-L text encoder keys (cond_stage_model.transformer.text_model)"
    if ev.embedding_width in _CONTEXT_DIMS:
        return _CONTEXT_DIMS[ev.embedding_width], f"embedding vectors {ev.embedding_width} wide"
    return "unknown", ""


def describe(*, metadata: dict | None, evidence: TensorEvidence | None, fmt: str = "") -> SelfDescription:
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

    ev = evidence or TensorEvidence()
    kind, why = _type_from_tensors(ev, fmt)
    meta_kind, meta_why = _type_from_metadata(out)
    if kind == "unknown" or (kind == "LoRA" and meta_kind == "LyCORIS"):  # LoCon keeps lora_ names
        kind, why = (meta_kind, meta_why) if meta_kind != "unknown" else (kind, why)
    base, base_why = _base_from_tensors(ev)
    meta_base, meta_base_why = _base_from_metadata(out)
    if base == "unknown":
        base, base_why = meta_base, meta_base_why
    out.type_guess, out.base_guess = kind, base
    out.evidence = [w for w in (why, base_why) if w]
    for extra in (meta_why, meta_base_why):
        if extra and extra not in out.evidence:
            out.evidence.append(extra)
    out.evidence = out.evidence[:MAX_EVIDENCE]
    return out
