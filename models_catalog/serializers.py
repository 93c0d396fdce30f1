"""REST API shapes: read serializers for rows, input serializers for requests, and
documentation-only serializers for the dataclasses the services return.

Privacy: a serializer that shows local files gets the requesting user in its
context and never names a file the requester may not see: evidence goes through
`selectors.evidence_shown_to`, the one rule the pages use too.
"""
from __future__ import annotations

import re

from django.contrib.auth import authenticate
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from models_catalog.identity import file_identities
from models_catalog.models import FileHashes, FolderMember, Job, LocalFile, Match, SourceFile, SourceModel, SourceVersion
from models_catalog.selectors import (
    FILE_MATCH_KINDS, FILE_SCOPES, FILE_SORTS, FILE_STATES, LOCAL_FORMATS, PAGE_SIZE, VERDICTS, evidence_shown_to,
    owner_label,
)
from models_catalog.services.forget import STORED_COPY_WORDS
from workers import kinds
from workers.modelfiles.architecture import FAMILIES, KINDS

# --- hashes -------------------------------------------------------------------


# The hashes as Civitai prints them (upper-case hex; null where unknown), one field per kinds.CIVITAI_KINDS.
CivitaiHashesSerializer = type("CivitaiHashesSerializer", (serializers.Serializer,), {
    "__doc__": "The hashes as Civitai prints them (upper-case hex; null where unknown).",
    "__module__": __name__,
    **{name: serializers.CharField(allow_null=True) for name in kinds.CIVITAI_NAMES},
})


class EmbeddedHashesSerializer(serializers.Serializer):
    sshs_model_hash = serializers.CharField(allow_blank=True)
    sshs_legacy_hash = serializers.CharField(allow_blank=True)


class LocalHashesSerializer(serializers.Serializer):
    civitai = serializers.SerializerMethodField()
    autov3_full = serializers.CharField()
    folder_digest = serializers.CharField()
    size = serializers.IntegerField()
    source = serializers.CharField(help_text="engine (hashed here), pushed (hashed remotely) or imported (unconfirmed)")
    embedded = serializers.SerializerMethodField()
    embedded_differs = serializers.BooleanField(help_text="the hash written inside the file disagrees with its tensor data")

    @extend_schema_field(CivitaiHashesSerializer)
    def get_civitai(self, h: FileHashes) -> dict:
        return h.civitai_form()

    @extend_schema_field(EmbeddedHashesSerializer)
    def get_embedded(self, h: FileHashes) -> dict:
        return {"sshs_model_hash": h.embedded_model_hash, "sshs_legacy_hash": h.embedded_legacy_hash}


class FolderMemberSerializer(serializers.ModelSerializer):
    hashes = serializers.SerializerMethodField()

    class Meta:
        model = FolderMember
        fields = ["relative_path", "size", "hashes", "autov3_full"]

    @extend_schema_field(CivitaiHashesSerializer)
    def get_hashes(self, m: FolderMember) -> dict:
        return m.civitai_form()


class SourceFileSerializer(serializers.ModelSerializer):
    hashes = serializers.SerializerMethodField()

    class Meta:
        model = SourceFile
        fields = ["id", "external_id", "name", "size", "file_type", "format", "fp", "size_kind", "primary",
                  "hashes", "autov3_full", "git_sha1", "source_scan", "source_scan_message", "download_url"]

    @extend_schema_field(CivitaiHashesSerializer)
    def get_hashes(self, sf: SourceFile) -> dict:
        return sf.civitai_form()


# --- matches, seen from the requesting user ------------------------------------


def _requester(context):
    request = context.get("request")
    return getattr(request, "user", None)


def _evidence(serializer, m: Match):
    """The match's evidence as selectors.evidence_shown_to lets the requester see it: from
    context["evidence"] (one batch for the whole list), else worked out for this match alone."""
    shown = serializer.context.get("evidence") or {}
    if m.pk not in shown:
        shown = evidence_shown_to([m], user=_requester(serializer.context))
    return shown[m.pk]


def _with_evidence(context, matches) -> dict:
    return {**context, "evidence": evidence_shown_to(matches, user=_requester(context))}


class SourceRefSerializer(serializers.Serializer):
    model_id = serializers.IntegerField()
    model = serializers.CharField()
    model_type = serializers.CharField()
    source = serializers.CharField()
    version_id = serializers.IntegerField()
    version = serializers.CharField()
    base_model = serializers.CharField()
    url = serializers.CharField()
    file = SourceFileSerializer()


class FileMatchSerializer(serializers.ModelSerializer):
    """A match on a file's own page: what it is, why we think so, and where that is published."""

    evidence = serializers.SerializerMethodField()
    via_local_file_id = serializers.SerializerMethodField()
    source = serializers.SerializerMethodField()

    class Meta:
        model = Match
        fields = ["id", "kind", "evidence", "share", "via_local_file_id", "source"]

    def get_evidence(self, m: Match) -> str:
        return _evidence(self, m).text

    def get_via_local_file_id(self, m: Match) -> int | None:
        return _evidence(self, m).via_id

    @extend_schema_field(SourceRefSerializer)
    def get_source(self, m: Match) -> dict:
        sf = m.source_file
        version = sf.version
        model = version.model
        return {
            "model_id": model.pk, "model": model.name, "model_type": model.type, "source": model.source,
            "version_id": version.pk, "version": version.name or version.external_id, "base_model": version.base_model,
            "url": version.url or model.url, "file": SourceFileSerializer(sf).data,
        }


class _OwnerField:
    """`owner`: whose file a row is when it is not the requester's (staff see everyone's); '' for their own."""

    def _owner_of(self, lf: LocalFile) -> str:
        return owner_label(lf, user=_requester(self.context))


class MyMatchSerializer(_OwnerField, serializers.Serializer):
    """A local file the requesting user may see (their own; staff: anyone's) matched to a catalog file."""

    local_file_id = serializers.IntegerField(source="local_file.id")
    owner = serializers.SerializerMethodField(help_text="the file's owner when it is not yours (staff); '' for yours")
    name = serializers.CharField(source="local_file.name")
    path = serializers.CharField(source="local_file.path")
    host = serializers.CharField(source="local_file.host")
    source_file_id = serializers.IntegerField()
    version_id = serializers.IntegerField(source="source_file.version_id")
    kind = serializers.CharField()
    evidence = serializers.SerializerMethodField()

    def get_evidence(self, m: Match) -> str:
        return _evidence(self, m).text

    def get_owner(self, m: Match) -> str:
        return self._owner_of(m.local_file)


# --- local files ----------------------------------------------------------------


class ProgressSerializer(serializers.Serializer):
    status = serializers.CharField()
    bytes_done = serializers.IntegerField()
    bytes_total = serializers.IntegerField()
    percent = serializers.IntegerField()
    error = serializers.CharField(allow_blank=True)


class VersionUpdateSerializer(serializers.Serializer):
    """A newer Civitai version than any the file's owner holds (models_catalog.updates)."""

    name = serializers.CharField(allow_blank=True)
    published_at = serializers.DateTimeField(allow_null=True)
    url = serializers.CharField(allow_blank=True, help_text="the version on the Civitai site that answered")
    early_access = serializers.BooleanField()
    early_access_ends_at = serializers.DateTimeField(allow_null=True)


class FileIdentitySerializer(serializers.Serializer):
    """What the file is (models_catalog.identity.FileIdentity): the same answer the pages show."""

    state = serializers.ChoiceField(choices=["identified", "related", "working", "waiting", "unknown", "broken"])
    is_finished = serializers.BooleanField(help_text="false while it is read or a Civitai answer is awaited")
    match_kind = serializers.CharField(allow_blank=True, help_text="the strongest match: exact, renamed, same-weights, "
                                                                   "converted, precision, partial, short-hash, manual "
                                                                   "(linked by you); empty: none")
    badge = serializers.CharField(help_text='e.g. "renamed copy", "converted", "precision variant", "unknown"')
    summary = serializers.CharField(help_text='e.g. "renamed copy of Hidden Base Model v1.0 (file hiddenBase_v10.safetensors)"')
    model_id = serializers.IntegerField(allow_null=True, help_text="catalog model id (GET /api/v1/models/{id}/)")
    model_name = serializers.CharField(allow_blank=True)
    model_type = serializers.CharField(allow_blank=True, help_text="Checkpoint, LORA, VAE, ...")
    version_id = serializers.IntegerField(allow_null=True)
    version_name = serializers.CharField(allow_blank=True)
    base_model = serializers.CharField(allow_blank=True, help_text="e.g. SD 1.5, SDXL 1.0")
    source = serializers.CharField(allow_blank=True, help_text="civitai or huggingface")
    source_file_name = serializers.CharField(allow_blank=True, help_text="the published file it matches")
    trained_words = serializers.ListField(child=serializers.CharField())
    evidence = serializers.CharField(allow_blank=True, help_text="why; never names another user's file")
    waiting_for = serializers.CharField(allow_blank=True, help_text='e.g. "Civitai (unavailable or rate-limited, retrying at 12:03:10)"')
    problem = serializers.CharField(allow_blank=True, help_text="why a broken file could not be read, or why a source could not be asked")
    other_kinds = serializers.ListField(child=serializers.CharField(), help_text="weaker kinds of match it also has")
    update = VersionUpdateSerializer(allow_null=True, help_text="a newer version on Civitai, as of the hourly refresh; "
                                                                "null: none known")
    described_as = serializers.CharField(allow_blank=True, help_text='what an unknown file says about itself, e.g. '
                                                                     '"LoRA for SDXL: my_style_v3" (summary: "unknown ...")')


class SelfDescriptionSerializer(serializers.Serializer):
    """What the file says about itself (workers/modelfiles/self_description.py), values capped."""

    type_guess = serializers.CharField(help_text="checkpoint, LoRA, LyCORIS, VAE, embedding, text encoder, diffusers "
                                                 "or unknown")
    base_guess = serializers.CharField(help_text="SD 1.x, SD 2.x, SDXL, SD3, Flux or unknown")
    evidence = serializers.ListField(child=serializers.CharField(), help_text="why the guesses")
    label = serializers.CharField(allow_blank=True, help_text='e.g. "LoRA for SDXL: my_style_v3"')
    title = serializers.CharField(allow_blank=True, help_text="modelspec.title, else ss_output_name")
    output_name = serializers.CharField(allow_blank=True)
    architecture = serializers.CharField(allow_blank=True)
    author = serializers.CharField(allow_blank=True)
    date = serializers.CharField(allow_blank=True)
    description = serializers.CharField(allow_blank=True)
    base_model_version = serializers.CharField(allow_blank=True)
    sd_model_name = serializers.CharField(allow_blank=True)
    network_module = serializers.CharField(allow_blank=True)
    network_dim = serializers.CharField(allow_blank=True)
    network_alpha = serializers.CharField(allow_blank=True)
    resolution = serializers.CharField(allow_blank=True)
    num_epochs = serializers.CharField(allow_blank=True)
    epoch = serializers.CharField(allow_blank=True)
    training_started_at = serializers.CharField(allow_blank=True)
    top_tags = serializers.ListField(child=serializers.ListField(), help_text="[[tag, count], ...] most frequent first")
    capped = serializers.ListField(child=serializers.CharField(), help_text="values cut or skipped, and why")


class ArchitectureSerializer(serializers.Serializer):
    """Family and kind from the tensor names and shapes (workers/modelfiles/architecture.py)."""

    family = serializers.CharField(help_text=f"{', '.join(FAMILIES)}")
    kind = serializers.CharField(help_text=f"{', '.join(KINDS)}")
    kind_label = serializers.CharField(help_text='the kind in words, e.g. "LoRA (kohya)", "text encoder (T5-XXL)"')
    label = serializers.CharField(allow_blank=True, help_text='e.g. "LoRA (kohya) for SDXL"')
    evidence = serializers.ListField(child=serializers.CharField(), help_text="which tensor names and shapes decided")
    encoders = serializers.ListField(child=serializers.CharField(), help_text="text encoders present: clip_l, clip_h, "
                                                                               "clip_g, t5xxl, t5")


class _IdentityField:
    """`identity` of a LocalFile serializer: from context["identities"] (one batch for a whole page),
    else computed for this one file."""

    @extend_schema_field(FileIdentitySerializer)
    def get_identity(self, lf: LocalFile) -> dict:
        return self._identity_of(lf).to_json()

    def _identity_of(self, lf: LocalFile):
        identities = self.context.get("identities") or {}
        identity = identities.get(lf.pk)
        if identity is None:  # computed once per file even when two fields need it
            cache = self.__dict__.setdefault("_identities", {})
            if lf.pk not in cache:
                cache[lf.pk] = file_identities([lf], viewer=_requester(self.context))[lf.pk]
            identity = cache[lf.pk]
        return identity


class LocalFileListSerializer(_IdentityField, _OwnerField, serializers.ModelSerializer):
    owner = serializers.SerializerMethodField(help_text="the file's owner when it is not yours (staff); '' for yours")
    family = serializers.CharField(source="architecture_family", read_only=True,
                                   help_text="family from the tensors (SD 1.x, SDXL, Flux, ...); '' before detection")
    kind = serializers.CharField(source="architecture_kind", read_only=True,
                                 help_text="kind from the tensors (checkpoint, lora_kohya, vae, t5xxl, ...)")
    sha256 = serializers.SerializerMethodField()
    best_match = serializers.SerializerMethodField()
    identity = serializers.SerializerMethodField()
    progress_percent = serializers.IntegerField(read_only=True)

    class Meta:
        model = LocalFile
        fields = ["id", "owner", "name", "path", "host", "origin", "is_folder", "size", "status", "progress_percent",
                  "error", "format", "family", "kind", "safety_verdict", "sha256", "best_match", "identity",
                  "created_at", "hashed_at", "quarantined_at"]

    def get_owner(self, lf: LocalFile) -> str:
        return self._owner_of(lf)

    def get_sha256(self, lf: LocalFile) -> str | None:
        h = lf.stored_hashes
        return (h.sha256.upper() or None) if h else None

    def get_best_match(self, lf: LocalFile) -> str | None:
        """The strongest match kind, e.g. "exact" (null: not identified); the same as identity.match_kind."""
        return self._identity_of(lf).match_kind or None


class LocalFilePageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="the next page (null: this is the last one)")
    results = LocalFileListSerializer(many=True)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise serializers.ValidationError("NUL characters are not allowed")
    return value


def _text(max_length: int, help_text: str) -> serializers.CharField:
    return serializers.CharField(required=False, allow_blank=True, max_length=max_length, validators=[_no_nul],
                                 help_text=help_text)


def _choice(choices, help_text: str) -> serializers.ChoiceField:
    return serializers.ChoiceField(required=False, allow_blank=True, choices=choices, help_text=help_text)


class FileListParamsSerializer(serializers.Serializer):
    """Query parameters of GET /api/v1/files/: the same as the My files page (forms.FileFilterForm)."""

    search = _text(8 * 1024, "part of the name, the path or a matched model's name, or any hash in any form "
                             "(SHA256, AutoV1/2/3, CRC32, BLAKE3, with or without a kind: prefix)")
    type = _text(64, "model type of a match, e.g. Checkpoint, LORA (any case)")
    base_model = _text(100, "base model of a match, e.g. SDXL 1.0 (any case)")
    safety = _choice(VERDICTS, "safety verdict")
    match = _choice(FILE_MATCH_KINDS, "kind of the file's strongest match; none: not identified")
    state = _choice(list(FILE_STATES), "identified | related (partial or short hash only) | unknown (read, not "
                                       "identified; includes files waiting for Civitai) | working | broken")
    folder = _text(4096, "only files in this folder or below (a path prefix)")
    status = _choice(LocalFile.Status.choices, "pipeline status")
    origin = _choice(LocalFile.Origin.choices, "how the file came")
    format = _choice(LOCAL_FORMATS, "format read from the content")
    family = _choice(FAMILIES, "family from the tensor names and shapes, e.g. SDXL, Flux")
    kind = _choice(list(KINDS), "kind from the tensors, e.g. checkpoint, lora_kohya, vae, t5xxl")
    updates = _choice(["newer"], "newer: only files whose Civitai model has a newer version than any you hold")
    sort = _choice(list(FILE_SORTS), "newest (default) | name | size (largest first) | model (model name A-Z, "
                                     "unidentified files after)")
    scope = _choice(list(FILE_SCOPES), "mine (default): your own files, also for staff; all: every file you may "
                                       "see (staff: everyone's)")
    cursor = _text(2000, "from `next`; an unreadable cursor gives the first page")
    page_size = serializers.IntegerField(required=False, min_value=1, default=PAGE_SIZE,
                                         help_text="rows per page (larger values are capped at 200)")


class SafetySerializer(serializers.Serializer):
    verdict = serializers.CharField(allow_blank=True, help_text="safe, suspicious, dangerous, unreadable, or empty (not scanned yet)")
    findings = serializers.ListField(child=serializers.JSONField())


class PreviewSerializer(serializers.Serializer):
    url = serializers.CharField(allow_blank=True, help_text="our re-encoded thumbnail (sign-in needed); '' until downloaded")
    placeholder_url = serializers.CharField(allow_blank=True, help_text="the blurhash as a tiny PNG; '' without one")
    blurred = serializers.BooleanField(help_text="above your NSFW level (Settings): show the placeholder until asked")
    nsfw_level = serializers.IntegerField(help_text="Civitai's 1 PG, 2 PG-13, 4 R, 8 X, 16 XXX; 0 unknown")
    width = serializers.IntegerField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)
    state = serializers.CharField(help_text="listed (not downloaded), done or failed")
    error = serializers.CharField(allow_blank=True, help_text="why a download failed (retried hourly)")


class LocalFileDetailSerializer(_IdentityField, _OwnerField, serializers.ModelSerializer):
    owner = serializers.SerializerMethodField(help_text="the file's owner when it is not yours (staff); '' for yours")
    identity = serializers.SerializerMethodField()
    previews = serializers.SerializerMethodField()
    hashes = serializers.SerializerMethodField()
    members = FolderMemberSerializer(many=True, read_only=True)
    matches = serializers.SerializerMethodField()
    safety = serializers.SerializerMethodField()
    fingerprint = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    self_description = SelfDescriptionSerializer(allow_null=True, read_only=True)
    architecture = ArchitectureSerializer(allow_null=True, read_only=True,
                                          help_text="null: analysed before detection (manage.py refingerprint)")

    class Meta:
        model = LocalFile
        fields = ["id", "owner", "name", "path", "host", "origin", "is_folder", "size", "format", "content_id",
                  "precision_id", "bf16_id", "fp8_id", "e5m2_id", "folded_id", "analysis_error", "identity", "hashes", "members", "matches",
                  "safety", "fingerprint", "progress", "self_description", "architecture", "previews", "created_at",
                  "updated_at", "hashed_at",
                  "quarantined_at"]

    def get_owner(self, lf: LocalFile) -> str:
        return self._owner_of(lf)

    @extend_schema_field(PreviewSerializer(many=True))
    def get_previews(self, lf: LocalFile) -> list:
        """The identified version's first preview images, as the file page shows them."""
        from models_catalog.preview_selectors import previews_for_versions
        from models_catalog.services.preferences import nsfw_max_level_for

        version_id = self.get_identity(lf).get("version_id")
        if version_id is None:
            return []
        viewer = _requester(self.context)
        found = previews_for_versions([version_id], nsfw_max_level=nsfw_max_level_for(viewer))
        return PreviewSerializer(found.get(version_id, []), many=True).data

    @extend_schema_field(LocalHashesSerializer(allow_null=True))
    def get_hashes(self, lf: LocalFile) -> dict | None:
        h = lf.stored_hashes
        return LocalHashesSerializer(h).data if h is not None else None

    @extend_schema_field(FileMatchSerializer(many=True))
    def get_matches(self, lf: LocalFile) -> list:
        rows = sorted(lf.matches.all(), key=lambda m: (Match.STRENGTH.get(m.kind, 9), m.pk))
        return FileMatchSerializer(rows, many=True, context=_with_evidence(self.context, rows)).data

    @extend_schema_field(SafetySerializer)
    def get_safety(self, lf: LocalFile) -> dict:
        return {"verdict": lf.safety_verdict, "findings": lf.safety_findings or []}

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_fingerprint(self, lf: LocalFile) -> dict | None:
        """The tensor fingerprint without per-tensor digests: ids, counts, dtypes, components."""
        fp = lf.fingerprint if isinstance(lf.fingerprint, dict) else None
        if not fp:
            return None
        # Per-tensor digests can run to thousands of entries: the summary leaves them out.
        return {k: v for k, v in fp.items() if k != "digests"}

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, lf: LocalFile) -> dict:
        # bytes_done of the current stage: hashed bytes, or tensor bytes read while analysing.
        return {"status": lf.status, "bytes_done": lf.stage_bytes_done, "bytes_total": lf.bytes_total,
                "percent": lf.progress_percent, "error": lf.error}


class UploadedFileSerializer(LocalFileDetailSerializer):
    """An upload's answer: the new file (201), or the file of yours that already holds these bytes (200)."""

    already_had = serializers.SerializerMethodField(
        help_text="true: you already had a file with this SHA256, so nothing new was stored and this is that file")

    class Meta(LocalFileDetailSerializer.Meta):
        fields = [*LocalFileDetailSerializer.Meta.fields, "already_had"]

    def get_already_had(self, lf: LocalFile) -> bool:
        return bool(self.context.get("already_had"))


# --- the catalog (shared) -----------------------------------------------------


class SourceModelListSerializer(serializers.ModelSerializer):
    versions_count = serializers.IntegerField(read_only=True)
    local_copies = serializers.IntegerField(read_only=True, help_text="how many of YOUR local files are matched to this model")
    base_models = serializers.SerializerMethodField()

    class Meta:
        model = SourceModel
        fields = ["id", "source", "external_id", "name", "type", "nsfw", "url", "versions_count", "base_models",
                  "local_copies", "fetched_at"]

    def get_base_models(self, m: SourceModel) -> list[str]:
        return sorted({v.base_model for v in m.versions.all() if v.base_model})


class SourceVersionSerializer(serializers.ModelSerializer):
    files = SourceFileSerializer(many=True, read_only=True)

    class Meta:
        model = SourceVersion
        fields = ["id", "external_id", "name", "base_model", "trained_words", "air", "description", "published_at",
                  "url", "files", "fetched_at"]


class SourceModelDetailSerializer(SourceModelListSerializer):
    versions = SourceVersionSerializer(many=True, read_only=True)
    my_local_files = serializers.SerializerMethodField()

    class Meta(SourceModelListSerializer.Meta):
        fields = SourceModelListSerializer.Meta.fields + ["description", "versions", "my_local_files"]

    @extend_schema_field(MyMatchSerializer(many=True))
    def get_my_local_files(self, m: SourceModel) -> list:
        rows = list(self.context.get("my_matches", []))
        return MyMatchSerializer(rows, many=True, context=_with_evidence(self.context, rows)).data


class SourceModelRefSerializer(serializers.ModelSerializer):
    class Meta:
        model = SourceModel
        fields = ["id", "source", "external_id", "name", "type", "url"]


class SourceVersionDetailSerializer(SourceVersionSerializer):
    model = SourceModelRefSerializer(read_only=True)
    my_local_files = serializers.SerializerMethodField()

    class Meta(SourceVersionSerializer.Meta):
        fields = SourceVersionSerializer.Meta.fields + ["model", "my_local_files"]

    @extend_schema_field(MyMatchSerializer(many=True))
    def get_my_local_files(self, v: SourceVersion) -> list:
        rows = list(self.context.get("my_matches", []))
        return MyMatchSerializer(rows, many=True, context=_with_evidence(self.context, rows)).data


# --- jobs -------------------------------------------------------------------------


class JobSerializer(serializers.ModelSerializer):
    class Meta:
        model = Job
        fields = ["id", "kind", "params", "status", "progress_done", "progress_total", "message", "result",
                  "created_at", "updated_at"]


# --- requests -------------------------------------------------------------------------

# Hugging Face repo ids: "name" or "org/name", letters, digits, "-", "_", "." (at most 96 per part).
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")
REPO_TYPES = ("model", "dataset", "space")


def _encodable(value: str) -> str:
    """Paths go to the filesystem: refuse what cannot be a path before it gets there."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise serializers.ValidationError("not a valid path (unpaired surrogate characters)") from None
    if "\x00" in value:
        raise serializers.ValidationError("the path contains a NUL byte")
    return value


class LookupRequestSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=64 * 1024, trim_whitespace=True,
                                 help_text="one or more hashes (any kind, optional prefix like sha256:) or a pasted A1111 infotext")


class LookupQuerySerializer(serializers.Serializer):
    q = serializers.CharField(max_length=8 * 1024, help_text="a hash (any kind, optional prefix) or an infotext line")


class LookupMatchSerializer(serializers.Serializer):
    source = serializers.CharField(help_text='"civitai", "huggingface" or "my files"')
    model = serializers.CharField(allow_null=True)
    version = serializers.CharField(allow_null=True)
    file = serializers.CharField()
    match = serializers.CharField(
        help_text="how the entry relates to a model: exact, renamed, same-weights, converted, precision, partial, "
                  "short-hash; for one of my files what it is (or unknown / waiting / working / broken)")
    evidence = serializers.CharField()
    hash_kind = serializers.CharField(help_text="the hash kind that agreed with the query")
    summary = serializers.CharField(help_text='my files: "renamed copy of <model> <version> (file <name>)"')
    url = serializers.CharField(allow_null=True)
    model_id = serializers.IntegerField(allow_null=True)
    local_file_id = serializers.IntegerField(allow_null=True)
    owner = serializers.CharField(allow_blank=True, help_text="my files seen by staff: the file's owner ('' for yours)")


class LookupResultSerializer(serializers.Serializer):
    query = serializers.CharField()
    label = serializers.CharField(allow_null=True)
    kinds_tried = serializers.ListField(child=serializers.CharField())
    note = serializers.CharField(allow_null=True)
    matches = LookupMatchSerializer(many=True)
    civitai = serializers.CharField(help_text="off | known here | cached hit | cached miss | hit | miss | error: ...")


class RegisterRequestSerializer(serializers.Serializer):
    paths = serializers.ListField(child=serializers.CharField(max_length=4096, trim_whitespace=False), min_length=1,
                                  max_length=1000, help_text="absolute paths on the server, inside your model roots")

    def validate_paths(self, paths: list[str]) -> list[str]:
        return [_encodable(p) for p in paths]


class RefusedPathSerializer(serializers.Serializer):
    path = serializers.CharField()
    reason = serializers.CharField()


class RegisterCountsSerializer(serializers.Serializer):
    queued = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    failed = serializers.IntegerField()
    refused = serializers.IntegerField()


class RegisterOutcomeSerializer(serializers.Serializer):
    counts = RegisterCountsSerializer(help_text="how many of each; each list below holds at most the first 1,000")
    queued = serializers.ListField(child=serializers.IntegerField(), help_text="ids of files queued for hashing")
    unchanged = serializers.ListField(child=serializers.IntegerField(), help_text="ids already hashed (or on their way)")
    failed = serializers.ListField(child=serializers.IntegerField(), help_text="ids stored with an error, e.g. a FIFO")
    refused = RefusedPathSerializer(many=True)


class _PushAnalysisFields(serializers.Serializer):
    path = serializers.CharField(max_length=4096, help_text="where the file or folder is on the pushing machine")
    format = serializers.CharField(required=False, allow_blank=True, max_length=32)
    fingerprint = serializers.JSONField(required=False, allow_null=True,
                                        help_text="workers.modelfiles tensor fingerprint (content_id, precision_id, ...)")
    safety = serializers.JSONField(required=False, help_text='{"verdict": "safe|suspicious|dangerous|unreadable", "findings": [...]}')
    architecture = serializers.JSONField(required=False, allow_null=True,
                                         help_text="workers.modelfiles.architecture JSON (family, kind, kind_why, family_why, encoders)")


class PushFileRecordSerializer(_PushAnalysisFields):
    """Documentation of a pushed file record; records are validated one by one by the push service."""

    kind = serializers.ChoiceField(choices=["file"], required=False, help_text="file (the default)")
    hashes = serializers.JSONField(help_text="`python -m workers.hashing` JSON: SHA256 AutoV1 AutoV2 AutoV3 CRC32 BLAKE3 size autov3_full embedded")


class PushFolderMemberSerializer(serializers.Serializer):
    relative_path = serializers.CharField(
        help_text="posix path of a weight file inside the folder: no '..', no leading '/', no backslashes")
    hashes = serializers.JSONField(help_text="the member's hashes, as a file record's `hashes`")


class PushFolderHashesSerializer(serializers.Serializer):
    size = serializers.IntegerField(min_value=0)
    digest = serializers.CharField(min_length=64, max_length=64,
                                   help_text="InvokeAI's folder BLAKE3 over the members' BLAKE3 hashes; checked by the server")
    invokeai_hash = serializers.CharField(required=False)
    members = serializers.ListField(child=PushFolderMemberSerializer(), min_length=1)


class PushFolderRecordSerializer(_PushAnalysisFields):
    """Documentation of a pushed diffusers folder record: stored as one folder with its members."""

    kind = serializers.ChoiceField(choices=["folder"])
    folder = PushFolderHashesSerializer(help_text="`workers.hashing.FolderHashes.to_json()`")


PushRecordSerializer = PolymorphicProxySerializer(
    component_name="PushRecord", serializers=[PushFileRecordSerializer, PushFolderRecordSerializer],
    resource_type_field_name=None,
)


class PushRequestSerializer(serializers.Serializer):
    host = serializers.CharField(max_length=255, help_text="the machine that holds the files")
    # No max_length here: the push service refuses over-long batches with its own message.
    files = serializers.ListField(child=serializers.JSONField(),
                                  help_text="records (see PushRecord); a bad record is reported by index, the others are stored")


class PushRequestDocSerializer(PushRequestSerializer):
    files = serializers.ListField(child=PushRecordSerializer, max_length=500,
                                  help_text="file or folder records; a bad record is reported by index, the others are stored")

    class Meta:
        ref_name = "PushRequest"


class PushErrorSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    path = serializers.CharField(allow_null=True)
    error = serializers.CharField()


class PushOutcomeSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    ids = serializers.ListField(child=serializers.IntegerField())
    errors = PushErrorSerializer(many=True)


class UploadRequestSerializer(serializers.Serializer):
    file = serializers.FileField(help_text=f"the model file (multipart/form-data); limit MAX_UPLOAD_BYTES (default {64 * 1024**3:,} bytes)")


class ForgottenSerializer(serializers.Serializer):
    """What forgetting a file did (services/forget.py)."""

    id = serializers.IntegerField(source="local_file_id")
    name = serializers.CharField()
    stored_copy = serializers.ChoiceField(choices=sorted(STORED_COPY_WORDS), help_text=(
        "deleted: the upload's stored copy was deleted; not-stored: registered in place or pushed, the file was "
        "not touched; in-use: kept, another file uses it; already-gone; left-alone: the stored path is not an "
        "upload's copy inside the upload folder; failed: it could not be deleted (see message)"))
    freed_bytes = serializers.IntegerField(help_text="disk space freed by deleting the stored copy")
    message = serializers.CharField(source="summary", help_text="the same, in words")


class HfIndexRequestSerializer(serializers.Serializer):
    repo_id = serializers.RegexField(REPO_ID, max_length=193, help_text='"org/name" on the Hub')
    revision = serializers.RegexField(r"^[^\s\x00-\x1f]{1,255}$", required=False, allow_null=True, max_length=255,
                                      help_text="branch, tag or commit; default: the main branch")
    repo_type = serializers.ChoiceField(choices=REPO_TYPES, default="model")


class HfVerifyRequestSerializer(HfIndexRequestSerializer):
    local_dir = serializers.CharField(max_length=4096, help_text="a folder on the server, inside your model roots")

    def validate_local_dir(self, value: str) -> str:
        return _encodable(value)


class ConvertRequestSerializer(serializers.Serializer):
    out = serializers.CharField(max_length=4096, required=False, allow_blank=True,
                                help_text="the output file on the server, inside your model roots (default: beside "
                                          "the source, NAME.safetensors, or NAME.fp16.safetensors for a cast); an "
                                          "existing file is never replaced")
    dtype = serializers.ChoiceField(choices=["keep", "fp16", "bf16"], default="keep",
                                    help_text="keep the dtypes, or cast floating tensors to fp16 / bf16 "
                                              "(round to nearest even, bit-exact with torch)")
    allow_suspicious = serializers.BooleanField(default=False,
                                                help_text="convert a file whose verdict is suspicious; what lies "
                                                          "outside the allowlist is dropped and listed")
    original = serializers.ChoiceField(choices=["keep", "quarantine"], default="keep",
                                       help_text="what happens to the source once the output is verified "
                                                 "(quarantine: not available until the quarantine service is)")

    def validate_out(self, value: str) -> str:
        return _encodable(value)


class DuplicateMemberSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    path = serializers.CharField()
    format = serializers.CharField()
    precision = serializers.CharField()
    size = serializers.IntegerField()
    match = serializers.CharField(help_text="how it relates to the group: keep | same file | exact copy | same weights | "
                                            "converted | precision variant")
    evidence = serializers.CharField(help_text="why, naming the member it relates to")
    copy_set = serializers.IntegerField(help_text="members with the same number hold the same bytes")
    reclaim = serializers.CharField(help_text="keep | lossless | lossy | none (a hard link frees nothing)")


class DuplicateGroupSerializer(serializers.Serializer):
    members = DuplicateMemberSerializer(many=True)
    keep_id = serializers.IntegerField()
    model = serializers.CharField(allow_null=True)
    model_id = serializers.IntegerField(allow_null=True)
    total_bytes = serializers.IntegerField()
    reclaimable_bytes = serializers.IntegerField(help_text="lossless_bytes + lossy_bytes")
    lossless_bytes = serializers.IntegerField(help_text="freed by deleting exact copies, same-weights and converted copies")
    lossy_bytes = serializers.IntegerField(help_text="freed by deleting precision variants too")
    reason = serializers.CharField()
    warning = serializers.CharField(help_text="what keeping this copy discards ('' when nothing)")
    keeper_copies = serializers.IntegerField(help_text="exact copies of the keeper not yet hard links of it: "
                                                       "what the hardlink and quarantine actions take")
    evidence = serializers.ListField(child=serializers.CharField())


class DuplicatePageSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="groups in all pages")
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    lossless_bytes = serializers.IntegerField(help_text="all pages: freed by deleting copies that lose nothing")
    lossy_bytes = serializers.IntegerField(help_text="all pages: freed by deleting precision variants too")
    reclaimable_bytes = serializers.IntegerField()
    results = DuplicateGroupSerializer(many=True)


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, write_only=True)
    password = serializers.CharField(max_length=4096, write_only=True, trim_whitespace=False,
                                     style={"input_type": "password"})
    name = serializers.CharField(max_length=100, required=False, default="", allow_blank=True,
                                 help_text="what the token is for (e.g. the machine that pushes), shown on the API page")

    def validate(self, attrs):
        user = authenticate(request=self.context.get("request"), username=attrs["username"], password=attrs["password"])
        if user is None:  # also for inactive users: no hint which part was wrong
            raise serializers.ValidationError("Unable to log in with provided credentials.", code="authorization")
        return {"user": user, "name": attrs.get("name", "")}


class TokenResponseSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="the key, in this answer only: the server keeps just its hash")
    prefix = serializers.CharField(help_text="the key's first characters, as the API page lists it")
    name = serializers.CharField()
    created_at = serializers.DateTimeField()


class ErrorInnerSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="stable machine-readable reason, e.g. invalid_input, not_found, too_large")
    message = serializers.CharField(help_text="what went wrong, for people")
    detail = serializers.JSONField(allow_null=True, help_text="per-field messages for invalid_input; else null or extra data")


class ErrorSerializer(serializers.Serializer):
    error = ErrorInnerSerializer()
