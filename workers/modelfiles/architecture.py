"""Which model family a file belongs to and what kind of file it is, from its tensor names and shapes (PURE).

Fed one tensor at a time by the fingerprint's single pass (or a safetensors header), so a pickle
checkpoint, a diffusers folder and a safetensors file are judged by the same rules and nothing is
read twice. Memory stays constant: a count, the first example and a few shape values per fact.

How to read it: `RULES` is the whole knowledge. Each rule says "a key matching this pattern (and
this shape) is evidence of that fact"; `decide` then turns the facts seen into a family and a kind,
strongest evidence first, and says which keys decided. A new family is new rows and a line in
`_family`, not a new parser. Names are hostile input: patterns are anchored, keys are cut to 512
characters before matching, and evidence quotes at most 80 printable characters of a key.

Families: SD 1.x, SD 2.x, SDXL, SDXL refiner, SD3, Flux (dev and schnell share every tensor name
and shape except dev's guidance_in, which some dev derivatives drop, so both are "Flux"), unknown.
A standalone VAE or text encoder serves several families (the same CLIP-L is in SD 1.x, SDXL and
Flux; the 16-channel VAE shape in SD3 and Flux), so its family stays "unknown" and its kind says
what it is. Dtypes are not evidence: every family ships in fp32, bf16, fp16 and fp8.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from workers.modelfiles.fingerprint import _strip_wrappers, is_ignored_key

MAX_KEY_CHARS = 512
MAX_QUOTE_CHARS = 80
MAX_VALUES = 16  # distinct shape values kept per fact

FAMILIES = ("SD 1.x", "SD 2.x", "SDXL", "SDXL refiner", "SD3", "Flux", "unknown")
# kind -> words. Text encoders are named by what they are; their slot in a pipeline varies.
KINDS = {
    "checkpoint": "checkpoint",
    "unet": "UNet only",
    "transformer": "transformer only",
    "vae": "VAE",
    "clip_l": "text encoder (CLIP-L)",
    "clip_h": "text encoder (OpenCLIP-H)",
    "clip_g": "text encoder (OpenCLIP-bigG)",
    "t5xxl": "text encoder (T5-XXL)",
    "t5": "text encoder (T5)",
    "text_encoders": "text encoders",
    "lora_kohya": "LoRA (kohya)",
    "lora_peft": "LoRA (PEFT/diffusers)",
    "lora_bfl": "LoRA (BFL)",
    "lora_xlabs": "LoRA (xlabs)",
    "lora": "LoRA",
    "lycoris": "LyCORIS",
    "embedding": "embedding",
    "diffusers": "diffusers pipeline",
    "unknown": "unknown",
}
LORA_KINDS = frozenset(k for k in KINDS if k.startswith("lora"))
TEXT_ENCODER_KINDS = frozenset({"clip_l", "clip_h", "clip_g", "t5xxl", "t5", "text_encoders"})
ENCODER_KINDS = ("clip_l", "clip_h", "clip_g", "t5xxl", "t5")


def short_kind(kind: str) -> str:
    """'CLIP-L' for clip_l: the words in a text encoder's brackets."""
    words = KINDS.get(kind, kind)
    return words.split("(", 1)[1].rstrip(")") if "(" in words else words

# A CLIP text tower's width names it: OpenAI CLIP ViT-L/14 (SD 1.x, SDXL's first, Flux's, SD3's
# first), OpenCLIP ViT-H/14 (SD 2.x), OpenCLIP ViT-bigG/14 (SDXL's second, SD3's CLIP-G).
CLIP_WIDTHS = {768: "clip_l", 1024: "clip_h", 1280: "clip_g"}
T5XXL_WIDTH = 4096
# Width of the text context the UNet's cross-attention reads (attn2 to_k / to_v inputs).
CONTEXT_WIDTHS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL", 1280: "SDXL refiner"}
# Input width of SDXL's ADM embedding (label_emb.0.0 / add_embedding.linear_1): pooled text
# embedding + size/crop (+ aesthetic score for the refiner) conditioning.
ADM_WIDTHS = {2816: "SDXL", 2560: "SDXL refiner"}


# A diffusers folder's model_index.json names its pipeline class, and diffusers' class names carry
# the family (diffusers/pipelines/__init__.py: StableDiffusionXLPipeline, StableDiffusionXLImg2Img...,
# StableDiffusion3Pipeline, FluxPipeline, FluxFillPipeline, ...). First prefix that matches wins, so
# the longer SD names come before any shorter one. StableDiffusionPipeline serves SD 1.x and 2.x
# alike: it names no family, the text encoder's width does. The refiner shares SDXL's img2img class;
# its model_index.json sets requires_aesthetics_score (the refiner's extra conditioning).
PIPELINE_FAMILIES = (("StableDiffusionXL", "SDXL"), ("StableDiffusion3", "SD3"), ("Flux", "Flux"))


def pipeline_family(class_name: str, *, aesthetics_score: bool = False) -> str:
    """The family a diffusers pipeline class names, "unknown" when it names none."""
    family = next((f for prefix, f in PIPELINE_FAMILIES if class_name.startswith(prefix)), "unknown")
    return "SDXL refiner" if family == "SDXL" and aesthetics_score else family


@dataclass(frozen=True)
class Rule:
    fact: str
    pattern: re.Pattern
    says: str  # what the fact means, in words (evidence)
    shape_ok: Callable[[tuple[int, ...]], bool] | None = None
    value: Callable[[tuple[int, ...]], int] | None = None  # a shape number the decision needs


def _r(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def _dims(n: int) -> Callable[[tuple[int, ...]], bool]:
    return lambda shape: len(shape) == n


_DENOISER_PREFIX = r"^(?:model\.diffusion_model\.|diffusion_model\.|unet\.|transformer\.|lora_unet_|lora_transformer_)?"
_VAE_PREFIX = r"^(?:first_stage_model\.|vae\.|ae\.)?"

# The table. Order does not matter: every rule is tried on every key.
RULES: tuple[Rule, ...] = (
    # --- denoisers ---------------------------------------------------------------------------
    # BFL Flux (flux1-dev/schnell.safetensors, ComfyUI all-in-one under model.diffusion_model.,
    # kohya LoRAs as lora_unet_double_blocks_0_img_attn_qkv): double/single stream blocks.
    Rule("flux", _r(_DENOISER_PREFIX + r"(?:double_blocks|single_blocks)[._]\d+[._]"
                    r"(?:img_attn|txt_attn|img_mlp|txt_mlp|img_mod|txt_mod|linear1|linear2|modulation|norm|processor)"),
         "Flux double/single-stream blocks"),
    # diffusers FluxTransformer2DModel: only Flux has single_transformer_blocks.
    Rule("flux", _r(_DENOISER_PREFIX + r"single_transformer_blocks[._]\d+[._]"), "Flux single-stream blocks (diffusers)"),
    # SD3 MMDiT, original (joint_blocks.N.x_block / context_block) and kohya names.
    Rule("sd3", _r(_DENOISER_PREFIX + r"joint_blocks[._]\d+[._]"), "SD3 MMDiT joint blocks"),
    # diffusers SD3Transformer2DModel: dual-stream attention without Flux's single blocks.
    Rule("mmdit", _r(_DENOISER_PREFIX + r"transformer_blocks[._]\d+[._]attn[._]add_q_proj"),
         "dual-stream attention (add_q_proj)"),
    # UNets, LDM (input_blocks) and diffusers (down_blocks) names; VAE keys carry encoder./decoder.
    # before the same words, so the anchor keeps them out.
    Rule("unet", _r(_DENOISER_PREFIX + r"(?:input_blocks|middle_block|output_blocks|down_blocks|up_blocks|mid_block"
                    r"|time_embed|time_embedding)[._]"), "UNet blocks"),
    Rule("adm", _r(_DENOISER_PREFIX + r"(?:label_emb\.0\.0|add_embedding\.linear_1)\.weight$"),
         "SDXL size/crop conditioning (ADM) input", shape_ok=_dims(2), value=lambda s: s[1]),
    # Cross-attention keys project the text context: their input width names the text encoder.
    # LoRA down / A matrices keep that width too ([rank, context]); up / B ones do not.
    Rule("context", _r(r"attn2[._](?:to_k|to_v|processor[._]to_k_lora|processor[._]to_v_lora)"
                       r"(?:\.weight|\.lora_down\.weight|\.lora_A\.weight|\.down\.weight|_lora\.down\.weight)$"),
         "cross-attention context width", shape_ok=_dims(2), value=lambda s: s[1]),
    # --- VAEs (LDM and diffusers names; bare in a standalone VAE) -------------------------------
    Rule("vae", _r(_VAE_PREFIX + r"(?:encoder|decoder)\.(?:conv_in|conv_out|norm_out|conv_norm_out|down\.|up\.|mid\."
                   r"|down_blocks\.|up_blocks\.|mid_block\.)"), "VAE encoder/decoder"),
    Rule("vae", _r(_VAE_PREFIX + r"(?:post_)?quant_conv\."), "VAE quant_conv"),
    # decoder.conv_in reads the latent: 4 channels (SD 1.x/2.x/SDXL), 16 (SD3, Flux).
    Rule("latent", _r(_VAE_PREFIX + r"decoder\.conv_in\.weight$"), "VAE latent channels",
         shape_ok=_dims(4), value=lambda s: s[1]),
    # --- text encoders ----------------------------------------------------------------------
    # HF CLIPTextModel (bare, cond_stage_model.transformer., conditioner.embedders.0.transformer.,
    # text_encoders.clip_l.transformer.); the width names the tower.
    Rule("clip", _r(r"(?:^|\.)text_model\.embeddings\.token_embedding\.weight$"), "CLIP text tower (HF)",
         shape_ok=_dims(2), value=lambda s: s[1]),
    Rule("clip", _r(r"(?:^|\.)text_model\.encoder\.layers\.0\.self_attn\.q_proj\.weight$"), "CLIP text tower (HF)",
         shape_ok=_dims(2), value=lambda s: s[1]),
    # OpenCLIP text tower (SD 2.x cond_stage_model.model., SDXL conditioner.embedders.1.model.).
    Rule("clip", _r(r"^(?!.*visual\.)(?:.*\.)?transformer\.resblocks\.0\.attn\.in_proj_weight$"),
         "OpenCLIP text tower", shape_ok=_dims(2), value=lambda s: s[1]),
    Rule("clip", _r(r"^(?:cond_stage_model\.model\.|conditioner\.embedders\.\d+\.model\.)token_embedding\.weight$"),
         "OpenCLIP text tower", shape_ok=_dims(2), value=lambda s: s[1]),
    # T5 encoder (bare t5xxl_fp16.safetensors, text_encoders.t5xxl.transformer., diffusers text_encoder_2/3).
    Rule("t5", _r(r"(?:^|\.)encoder\.block\.0\.layer\.0\.SelfAttention\.q\.weight$"), "T5 encoder",
         shape_ok=_dims(2), value=lambda s: s[1]),
    Rule("t5", _r(r"^(?:text_encoders\.t5xxl\.transformer\.)?shared\.weight$"), "T5 encoder",
         shape_ok=_dims(2), value=lambda s: s[1]),
    # Where a text encoder sits in a single file: names the family when widths cannot.
    Rule("sd1_te", _r(r"^cond_stage_model\.transformer\.text_model\."), "SD 1.x text encoder slot"),
    Rule("sd2_te", _r(r"^cond_stage_model\.model\.(?:transformer|token_embedding|text_projection)"),
         "SD 2.x text encoder slot (OpenCLIP)"),
    Rule("sdxl_te", _r(r"^conditioner\.embedders\.1\.|^lora_te2_"), "SDXL second text encoder"),
    # --- adapters ---------------------------------------------------------------------------
    Rule("kohya", _r(r"^lora_(?:unet|te\d?|transformer)_[^.]+\.(?:lora_down\.weight|lora_up\.weight|alpha)$"),
         "kohya LoRA names (lora_unet_*.lora_down / lora_up / alpha)"),
    Rule("peft", _r(r"\.lora_[AB](?:\.default)?\.weight$"), "PEFT LoRA matrices (lora_A / lora_B)"),
    Rule("peft", _r(r"(?:\.lora|_lora|\.lora_linear_layer)\.(?:down|up)\.weight$"),
         "diffusers LoRA (lora.down / lora.up)"),
    Rule("lora_parts", _r(r"\.lora_(?:down|up)\.weight$"), "LoRA matrices (lora_down / lora_up)"),
    Rule("bfl_lora", _r(r"^(?:diffusion_model\.|model\.diffusion_model\.)?(?:double_blocks|single_blocks)\.\d+\..*"
                        r"\.lora_(?:A|B|down|up)\.weight$"), "LoRA on BFL Flux names"),
    Rule("xlabs", _r(r"^(?:double_blocks|single_blocks)\.\d+\.processor\.(?:qkv|proj)_lora\d*\.(?:down|up)\.weight$"),
         "xlabs Flux LoRA (processor.qkv_lora / proj_lora)"),
    Rule("lycoris", _r(r"(?:^|[._])(?:hada_w\d_[ab]|hada_t\d|lokr_w\d(?:_[ab])?|lokr_t\d)$|\.(?:hada|lokr)_"),
         "LyCORIS matrices (hada_ / lokr_)"),
    # --- textual inversion ------------------------------------------------------------------
    Rule("embedding", _r(r"^(?:emb_params|string_to_param(?:\..*)?|clip_l|clip_g)$"), "textual-inversion vectors",
         value=lambda s: s[-1] if s else 0),
    Rule("embedding_xl", _r(r"^clip_g$"), "SDXL textual inversion (clip_g vectors)"),
)


@dataclass
class _Seen:
    count: int = 0
    example: str = ""  # first key that matched, quoted in the evidence
    shape: tuple[int, ...] = ()
    says: str = ""
    values: dict[int, int] = field(default_factory=dict)  # value -> count


@dataclass(frozen=True)
class Architecture:
    family: str
    kind: str
    kind_why: str = ""  # which keys and shapes decided the kind ("" when unknown)
    family_why: str = ""
    encoders: tuple[str, ...] = ()  # the text encoders present (clip_l, clip_h, clip_g, t5xxl, t5)

    @property
    def evidence(self) -> tuple[str, ...]:
        # The family's key often decided the kind too ("Flux blocks ...; no VAE"): said once.
        family_why = "" if self.family_why and self.family_why in self.kind_why else self.family_why
        return tuple(w for w in (self.kind_why, family_why) if w)

    @property
    def kind_label(self) -> str:
        if self.kind == "text_encoders":
            return "text encoders (" + " + ".join(short_kind(e) for e in self.encoders) + ")"
        return KINDS.get(self.kind, self.kind)

    @property
    def label(self) -> str:
        """'LoRA (kohya) for SDXL', 'text encoder (T5-XXL)', ''."""
        if self.kind == "unknown" and self.family == "unknown":
            return ""
        what = self.kind_label if self.kind != "unknown" else "model"
        return f"{what} for {self.family}" if self.family != "unknown" else what

    def to_json(self) -> dict:
        return {"family": self.family, "kind": self.kind, "kind_label": self.kind_label, "label": self.label,
                "kind_why": self.kind_why, "family_why": self.family_why, "evidence": list(self.evidence),
                "encoders": list(self.encoders)}

    @classmethod
    def from_json(cls, data) -> Architecture | None:
        if not isinstance(data, dict):
            return None
        family, kind = data.get("family"), data.get("kind")
        if family not in FAMILIES or kind not in KINDS:
            return None
        why = {k: data[k][:400] if isinstance(data.get(k), str) else "" for k in ("kind_why", "family_why")}
        encoders = tuple(e for e in data.get("encoders") or () if e in ENCODER_KINDS)
        return cls(family=family, kind=kind, encoders=encoders, **why)


def _quote(name: str) -> str:
    shown = "".join(c if c.isprintable() else "?" for c in name[:MAX_QUOTE_CHARS])
    return shown + ("…" if len(name) > MAX_QUOTE_CHARS else "")


class ArchitectureDetector:
    """Feed `observe(name, shape)` every tensor; `decide(fmt)` answers. Constant memory."""

    def __init__(self) -> None:
        self.tensors = 0
        self.seen: dict[str, _Seen] = {}
        self.pipeline_class = ""  # a diffusers folder's model_index.json _class_name
        self.aesthetics_score = False  # ... and its requires_aesthetics_score (the SDXL refiner)

    def observe_model_index(self, model_index: dict) -> None:
        """What a diffusers folder's model_index.json says it is (its tensors still decide first)."""
        name = model_index.get("_class_name")
        self.pipeline_class = name[:MAX_KEY_CHARS] if isinstance(name, str) else ""
        self.aesthetics_score = model_index.get("requires_aesthetics_score") is True

    def observe(self, name: str, shape: tuple[int, ...]) -> None:
        self.tensors += 1
        key = _strip_wrappers(str(name)[:MAX_KEY_CHARS])
        if is_ignored_key(key):  # EMA copies, schedule buffers: they say nothing the weights do not
            return
        try:
            shape = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            shape = ()
        for rule in RULES:
            if not rule.pattern.search(key) or (rule.shape_ok is not None and not rule.shape_ok(shape)):
                continue
            s = self.seen.setdefault(rule.fact, _Seen())
            if not s.count:
                s.example, s.shape, s.says = key, shape, rule.says
            s.count += 1
            if rule.value is not None:
                v = rule.value(shape)
                if v in s.values or len(s.values) < MAX_VALUES:
                    s.values[v] = s.values.get(v, 0) + 1

    # --- reading the facts -------------------------------------------------------------------

    def has(self, fact: str) -> bool:
        return fact in self.seen

    def count(self, fact: str) -> int:
        return self.seen[fact].count if fact in self.seen else 0

    def values(self, fact: str) -> dict[int, int]:
        return self.seen[fact].values if fact in self.seen else {}

    def top_value(self, fact: str) -> int | None:
        values = self.values(fact)
        return max(values, key=lambda v: (values[v], v)) if values else None

    def why(self, fact: str, meaning: str = "") -> str:
        s = self.seen[fact]
        shape = f" {list(s.shape)}" if s.shape else ""
        more = f" (+{s.count - 1} more)" if s.count > 1 else ""
        return f"{meaning or s.says}: {_quote(s.example)}{shape}{more}"

    def encoders(self) -> tuple[str, ...]:
        found = [CLIP_WIDTHS[w] for w in sorted(self.values("clip")) if w in CLIP_WIDTHS]
        if self.has("t5"):
            found.append("t5xxl" if T5XXL_WIDTH in self.values("t5") else "t5")
        return tuple(dict.fromkeys(found))

    def decide(self, fmt: str = "") -> Architecture:
        family, family_why = _family(self)
        kind, kind_why = _kind(self, fmt)
        return Architecture(family=family, kind=kind, kind_why=kind_why, family_why=family_why,
                            encoders=self.encoders())

    def to_json(self) -> dict:
        return {"tensors": self.tensors, "facts": {k: asdict(v) for k, v in self.seen.items()}}


def _family(d: ArchitectureDetector) -> tuple[str, str]:
    """The tensors' answer; a diffusers pipeline class fills in when they have none, and is quoted
    when it disagrees with them (a mislabelled or hand-assembled folder)."""
    family, why = _family_from_tensors(d)
    if not d.pipeline_class:
        return family, why
    named = pipeline_family(d.pipeline_class, aesthetics_score=d.aesthetics_score)
    says = f"model_index.json names {_quote(d.pipeline_class)}"
    if family == "unknown" and named != "unknown":
        return named, f"{says} ({named} pipeline)"
    if named not in ("unknown", family):
        return family, f"{why} (but {says}, a {named} pipeline)"
    return family, why


def _family_from_tensors(d: ArchitectureDetector) -> tuple[str, str]:
    """Strongest evidence first: block names a family alone has, then widths, then slots."""
    if d.has("flux") or d.has("xlabs"):
        return "Flux", d.why("flux" if d.has("flux") else "xlabs")
    if d.has("sd3"):
        return "SD3", d.why("sd3")
    if d.has("mmdit"):
        return "SD3", d.why("mmdit", "SD3 dual-stream attention without Flux's single blocks")
    adm = d.top_value("adm")
    if adm in ADM_WIDTHS:
        return ADM_WIDTHS[adm], d.why("adm", f"ADM input {adm} wide ({ADM_WIDTHS[adm]})")
    context = d.top_value("context")
    if context in CONTEXT_WIDTHS and (d.has("unet") or d.has("kohya") or d.has("peft") or d.has("lora_parts")):
        family = CONTEXT_WIDTHS[context]
        return family, d.why("context", f"cross-attention context {context} wide ({family})")
    if d.has("sdxl_te"):
        return "SDXL", d.why("sdxl_te")
    if d.has("embedding_xl"):
        return "SDXL", d.why("embedding_xl")
    if d.has("unet") or d.has("kohya") or d.has("peft"):  # a denoiser: its text encoder's slot tells
        if d.has("sd2_te"):
            return "SD 2.x", d.why("sd2_te")
        if d.has("sd1_te"):
            return "SD 1.x", d.why("sd1_te")
    if d.has("embedding"):
        width = d.top_value("embedding")
        if width in (768, 1024):
            family = "SD 1.x" if width == 768 else "SD 2.x"
            return family, d.why("embedding", f"embedding vectors {width} wide ({family})")
    return "unknown", ""


# Adapter facts -> kinds, first match wins: LyCORIS and xlabs name their own matrices; kohya and BFL
# files also match the generic PEFT / lora_down rules (lora_A under BFL names), so they come first.
_ADAPTER_KINDS = (("lycoris", "lycoris"), ("xlabs", "lora_xlabs"), ("kohya", "lora_kohya"), ("bfl_lora", "lora_bfl"),
                  ("peft", "lora_peft"), ("lora_parts", "lora"))


def _kind(d: ArchitectureDetector, fmt: str) -> tuple[str, str]:
    if fmt == "diffusers":
        return "diffusers", "a diffusers folder (model_index.json and component folders)"
    if not d.tensors:
        return "unknown", ""
    for fact, kind in _ADAPTER_KINDS:
        if d.has(fact):
            return kind, d.why(fact)
    if d.has("embedding") and d.tensors <= 4:
        return "embedding", d.why("embedding")
    denoiser = next((f for f in ("flux", "sd3", "mmdit", "unet") if d.has(f)), "")
    encoders = d.encoders()
    if denoiser:
        if d.has("vae") or encoders:
            bundled = ", ".join((["VAE"] if d.has("vae") else []) + [short_kind(e) for e in encoders])
            return "checkpoint", f"{d.why(denoiser)}; bundles {bundled}"
        return ("unet" if denoiser == "unet" else "transformer"), d.why(denoiser) + "; no VAE or text encoder"
    if d.has("vae"):
        latent = d.top_value("latent")
        channels = {4: " (4 latent channels: SD 1.x, 2.x, SDXL)", 16: " (16 latent channels: SD3, Flux)"}.get(latent, "")
        return "vae", d.why("vae") + channels
    if len(encoders) == 1:
        return encoders[0], d.why("t5" if encoders[0].startswith("t5") else "clip", KINDS[encoders[0]])
    if encoders:
        return "text_encoders", "; ".join(d.why(f) for f in ("clip", "t5") if d.has(f))
    return "unknown", ""


def other_layouts(kind_a: str, kind_b: str) -> tuple[str, str] | None:
    """The words for two files' kinds when they differ, e.g. ("LoRA (kohya)", "LoRA (PEFT/diffusers)"):
    equal tensors under another naming (a kohya LoRA and its PEFT copy, a checkpoint and its unet) were
    converted, not just re-saved. None when either kind is unknown or both agree."""
    if not kind_a or not kind_b or "unknown" in (kind_a, kind_b) or kind_a == kind_b:
        return None
    return KINDS.get(kind_a, kind_a), KINDS.get(kind_b, kind_b)


def component_renames(arch: Architecture) -> dict[str, str]:
    """Components a file's names put in the wrong slot, which only its shapes correct: a standalone
    HF CLIP file is "text_encoder" by its key names (component_for_key sees no shapes), but a bigG
    one belongs in text_encoder_2, SDXL's and SD3's slot for it."""
    return {"text_encoder": "text_encoder_2"} if arch.kind == "clip_g" else {}


def detect(tensors, fmt: str = "") -> Architecture:
    """The answer for an iterable of (name, shape) pairs (tests, headers)."""
    detector = ArchitectureDetector()
    for name, shape in tensors:
        detector.observe(name, shape)
    return detector.decide(fmt)


__all__ = ["Architecture", "ArchitectureDetector", "RULES", "Rule", "FAMILIES", "KINDS", "LORA_KINDS",
           "TEXT_ENCODER_KINDS", "component_renames", "detect", "other_layouts", "pipeline_family", "short_kind"]
