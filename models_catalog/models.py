"""Every table of ModelXRef. Only this app writes to the database."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Upper

from workers import kinds


class LocalFile(models.Model):
    """A model file (or diffusers folder) a user has: registered in place, uploaded, or pushed as hashes."""

    class Origin(models.TextChoices):
        REGISTERED = "registered", "registered in place"
        UPLOADED = "uploaded", "uploaded"
        PUSHED = "pushed", "pushed from another machine"

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        HASHING = "hashing", "hashing"
        ANALYSING = "analysing", "reading tensors"
        DONE = "done", "done"
        ERROR = "error", "error"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="local_files")
    origin = models.CharField(max_length=16, choices=Origin.choices)
    # Absolute, symlink-resolved path on the machine that holds the file
    # (for pushed files: the path the remote machine reported, never opened here).
    path = models.TextField()
    host = models.CharField(max_length=255, blank=True, default="")
    name = models.CharField(max_length=255)
    is_folder = models.BooleanField(default=False)

    # Identity of the bytes we hashed; a change means the hashes are stale.
    size = models.BigIntegerField(null=True, blank=True)
    device = models.BigIntegerField(null=True, blank=True)
    inode = models.BigIntegerField(null=True, blank=True)
    mtime_ns = models.BigIntegerField(null=True, blank=True)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(default=0)
    # Bytes of tensor data read so far by the analysis stage ("reading tensors"), against bytes_total.
    # Its own field: bytes_done stays at the hashed size, which `register --wait` sums for its bar.
    analysed_bytes = models.BigIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    # Bumped on every progress write: a stale heartbeat on an unfinished row means its worker died.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # When the hashing message was handed to the broker (None: not sent yet, e.g. the broker was down);
    # the reaper sends what is unsent, and counts stages whose worker died in stage_attempts.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    stage_attempts = models.PositiveIntegerField(default=0)
    stage_started_at = models.DateTimeField(null=True, blank=True)

    # Filled by the analysis stage (format sniffing, pickle scan, fingerprint).
    format = models.CharField(max_length=32, blank=True, default="")
    safety_verdict = models.CharField(max_length=16, blank=True, default="")
    safety_findings = models.JSONField(default=list, blank=True)
    fingerprint = models.JSONField(null=True, blank=True)
    content_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    precision_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    # The content cast to bf16: links an fp32 model and its bf16 export (precision_id casts to fp16).
    bf16_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    # The content cast to fp8 e4m3fn (as torch casts): links any float copy and its fp8 cast.
    fp8_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    # The content cast to fp8 e5m2: links any float copy and its e5m2 cast (e4m3fn and e5m2 round differently).
    e5m2_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    # A kohya Flux LoRA with alphas other than its ranks: the content_id of diffusers' conversion of it,
    # whose weights hold the alphas folded in (workers/modelfiles/lora_folding.py). "" for other files.
    folded_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    analysis_error = models.TextField(blank=True, default="")
    # What the file says about itself (header metadata, type/base guess with evidence): see
    # workers/modelfiles/self_description.py. `described_as` is its one-line label ("LoRA for SDXL:
    # my_style_v3"), a column so identity names unknown files without loading the JSON;
    # `described_words` (title, output name, top tags) is what My files' search matches, indexed
    # by a trigram index on PostgreSQL (migration 0014).
    self_description = models.JSONField(null=True, blank=True)
    described_as = models.CharField(max_length=300, blank=True, default="")
    described_words = models.CharField(max_length=1000, blank=True, default="")
    # Family and kind from the tensor names and shapes (workers/modelfiles/architecture.py): the JSON
    # keeps the evidence; the two columns are what My files and the API filter on (?family=SDXL).
    # None: analysed before detection existed (`manage.py refingerprint` reads those files again).
    architecture = models.JSONField(null=True, blank=True)
    architecture_family = models.CharField(max_length=32, blank=True, default="", db_index=True)
    architecture_kind = models.CharField(max_length=32, blank=True, default="", db_index=True)
    # The model name of the file's best match ("" without one): the key of My files' model sort,
    # stored because a sort on a value reached through Match could use no index. Written with the
    # Match rows (identity.best_model_names_sync); what pages show comes from the Match rows themselves.
    best_model_name = models.CharField(max_length=500, blank=True, default="")
    # Set while the file sits in quarantine (a duplicate action moved it; its QuarantineEntry says from
    # where): `path` is then the quarantine path. Quarantined files are in no duplicate group.
    quarantined_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    hashed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "origin", "host", "path"], name="local_file_unique_path"),
        ]
        indexes = [
            models.Index(fields=["owner", "-created_at", "-id"], name="local_file_owner_recent"),
            # Keyset pagination of My files (selectors.file_list_page): one index per sort order,
            # each led by the owner, so a page is an index range whatever the library size.
            models.Index(fields=["owner", "id"], name="local_file_owner_id"),
            models.Index(fields=["owner", "name", "id"], name="local_file_owner_name_id"),
            models.Index(fields=["owner", "size", "id"], name="local_file_owner_size_id"),
            models.Index(fields=["owner", "best_model_name", "id"], name="local_file_owner_model_id"),
            # The folder filter is a range on the path (a prefix).
            models.Index(fields=["owner", "path"], name="local_file_owner_path"),
            # Duplicate grouping (services/duplicates.py) groups one owner's files by each key: an
            # owner-led index without the empty values makes that a range of the owner's keyed rows.
            *[models.Index(fields=["owner", key], condition=~Q(**{key: ""}), name=f"local_file_owner_{key}")
              for key in ("content_id", "precision_id", "bf16_id", "fp8_id", "e5m2_id", "folded_id")],
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def architecture_label(self) -> str:
        """'SDXL · LoRA (kohya)', 'text encoder (T5-XXL)', '' (not detected, or nothing known)."""
        from workers.modelfiles.architecture import KINDS

        parts = [p for p in (self.architecture_family, KINDS.get(self.architecture_kind, "")) if p and p != "unknown"]
        return " · ".join(parts)

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.DONE, self.Status.ERROR}

    @property
    def stored_hashes(self) -> FileHashes | None:
        """Its FileHashes row, or None before it is hashed (the reverse one-to-one raises instead)."""
        try:
            return self.hashes
        except FileHashes.DoesNotExist:
            return None

    @property
    def has_engine_hashes(self) -> bool:
        """Hashed here (or known for free from an HF cache). Imported or pushed values do not count."""
        h = self.stored_hashes
        return h is not None and h.source in (FileHashes.Source.ENGINE, FileHashes.Source.HF_CACHE)

    @property
    def stage_bytes_done(self) -> int:
        """Progress of the current stage: bytes hashed, or tensor bytes read while analysing."""
        return self.analysed_bytes if self.status == self.Status.ANALYSING else self.bytes_done

    @property
    def progress_percent(self) -> int:
        if self.status == self.Status.DONE:
            return 100
        if not self.bytes_total:
            return 0
        return min(100, int(self.stage_bytes_done * 100 / self.bytes_total))


class LocalComponent(models.Model):
    """One component (unet, vae, text_encoder, ...) of a LocalFile's tensor fingerprint.

    A copy of `LocalFile.fingerprint["components"]` kept as rows so partial
    matching finds files sharing a component through an index instead of
    reading every identified file's fingerprint. Rewritten with the fingerprint
    (see `matching.local_components_sync`).
    """

    local_file = models.ForeignKey(LocalFile, on_delete=models.CASCADE, related_name="components")
    name = models.CharField(max_length=64)
    content_id = models.CharField(max_length=64, db_index=True)
    precision_id = models.CharField(max_length=64, db_index=True)
    nbytes = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["local_file", "name"], name="local_component_unique_name")]

    def __str__(self) -> str:
        return f"{self.local_file_id}:{self.name}"


class HashFields(models.Model):
    """One column per hash kind (workers/kinds.py REGISTRY), lower-case hex, "" where unknown.

    The columns are written from the registry so that a new kind is a registry line plus its
    migration, never a second list to keep in step.
    """

    # A class body's namespace is a plain dict: this is how Django sees fields declared in a loop.
    for _kind in kinds.REGISTRY:
        vars()[_kind.field] = models.CharField(
            max_length=_kind.length, blank=True, default="", db_index=_kind.indexed,
        )
    del _kind

    class Meta:
        abstract = True

    def civitai_form(self) -> dict[str, str | None]:
        """Hashes as Civitai prints them (upper-case; None where Civitai keeps none)."""
        return kinds.civitai_form({k.field: getattr(self, k.field) for k in kinds.CIVITAI_KINDS})


class FileHashes(HashFields):
    """Hashes of one LocalFile. For a diffusers folder: the folder digest; members hold the rest."""

    class Source(models.TextChoices):
        ENGINE = "engine", "computed here"
        PUSHED = "pushed", "computed by a remote machine"
        IMPORTED = "imported", "imported from another tool, unconfirmed"
        HF_CACHE = "hf-cache", "SHA256 from the Hugging Face cache layout (not re-hashed)"

    local_file = models.OneToOneField(LocalFile, on_delete=models.CASCADE, related_name="hashes")
    size = models.BigIntegerField()
    folder_digest = models.CharField(max_length=64, blank=True, default="", db_index=True)
    embedded_model_hash = models.CharField(max_length=128, blank=True, default="")
    embedded_legacy_hash = models.CharField(max_length=128, blank=True, default="")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.ENGINE)
    computed_at = models.DateTimeField(auto_now=True)
    # local_file.owner, copied so that grouping one owner's duplicates by SHA256 is a range of the
    # (owner, sha256) index instead of a join over every file (issue #14). Files never change owner;
    # save() fills it, and the bulk writers (hashing.file_hashes_upsert) pass it.
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, related_name="+",
                              db_index=False)

    class Meta:
        indexes = [
            # local_file_id included (PostgreSQL): the files holding a repeated SHA256 are read from the index too
            models.Index(fields=["owner", "sha256"], condition=~Q(sha256=""), include=["local_file"],
                         name="file_hashes_owner_sha256"),
            models.Index(fields=["owner", "folder_digest"], condition=~Q(folder_digest=""),
                         name="file_hashes_owner_folder"),
        ]

    def save(self, *args, **kwargs):
        if self.owner_id is None and self.local_file_id is not None:
            self.owner_id = LocalFile.objects.filter(pk=self.local_file_id).values_list("owner_id", flat=True).first()
        super().save(*args, **kwargs)

    @property
    def embedded_differs(self) -> bool:
        return bool(self.embedded_model_hash) and self.embedded_model_hash.lower() != self.autov3_full


class FolderMember(HashFields):
    """One weight file inside a registered diffusers folder."""

    folder = models.ForeignKey(LocalFile, on_delete=models.CASCADE, related_name="members")
    relative_path = models.TextField()
    size = models.BigIntegerField()

    class Meta:
        ordering = ["relative_path"]
        constraints = [
            models.UniqueConstraint(fields=["folder", "relative_path"], name="folder_member_unique_path"),
        ]


# --- What the sources (Civitai, Hugging Face) know ---------------------------


class Source(models.TextChoices):
    CIVITAI = "civitai", "Civitai"
    HUGGINGFACE = "huggingface", "Hugging Face"


class SourceModel(models.Model):
    """A model as a source lists it: a Civitai model, or a Hugging Face repo."""

    source = models.CharField(max_length=16, choices=Source.choices)
    # Civitai: the model id; Hugging Face: "<repo_type>:<org>/<name>".
    external_id = models.CharField(max_length=255)
    name = models.CharField(max_length=500)
    type = models.CharField(max_length=64, blank=True, default="")  # Checkpoint, LORA, VAE, ...
    nsfw = models.BooleanField(default=False)
    description = models.TextField(blank=True, default="")
    url = models.URLField(max_length=500, blank=True, default="")
    # Civitai: the site that answered ("https://civitai.com" or "https://civitai.red"), which is where
    # its links go: since 2026-04 .com serves SFW content only and .red the rest.
    site = models.CharField(max_length=100, blank=True, default="")
    # Civitai: the newest published version of the model (set when the whole model is fetched), and
    # when that was last asked; the Updates filter compares it with the versions a user holds.
    newest_version = models.ForeignKey("SourceVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="+")
    versions_checked_at = models.DateTimeField(null=True, blank=True)
    raw = models.JSONField(default=dict, blank=True)
    fetched_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "external_id"], name="source_model_unique")]
        indexes = [
            models.Index(fields=["name"]), models.Index(fields=["type"]),
            # Keyset pagination of the catalog: (name, id) order, alone or within one source/type.
            models.Index(fields=["name", "id"], name="source_model_name_id"),
            models.Index(fields=["source", "name", "id"], name="source_model_src_name_id"),
            models.Index(fields=["type", "name", "id"], name="source_model_type_name_id"),
            # My files' type filter is case-insensitive (UPPER(type) = UPPER(x)): on PostgreSQL this index
            # also gives the planner statistics for that expression; without them it guesses a handful of
            # rows and joins every matching file before taking a page (174 ms instead of 3 at 100,000).
            models.Index(Upper("type"), name="source_model_type_upper"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_source_display()})"


class SourceVersion(models.Model):
    """A Civitai model version, or a Hugging Face repo at one commit."""

    model = models.ForeignKey(SourceModel, on_delete=models.CASCADE, related_name="versions")
    external_id = models.CharField(max_length=255)  # Civitai version id, or the 40-hex commit
    name = models.CharField(max_length=500, blank=True, default="")
    base_model = models.CharField(max_length=100, blank=True, default="", db_index=True)
    trained_words = models.JSONField(default=list, blank=True)
    air = models.CharField(max_length=255, blank=True, default="")
    description = models.TextField(blank=True, default="")
    published_at = models.DateTimeField(null=True, blank=True)
    # Civitai early access: "EarlyAccess" while only paying supporters may download it, until then.
    availability = models.CharField(max_length=32, blank=True, default="")
    early_access_ends_at = models.DateTimeField(null=True, blank=True)
    site = models.CharField(max_length=100, blank=True, default="")  # as SourceModel.site
    url = models.URLField(max_length=500, blank=True, default="")
    raw = models.JSONField(default=dict, blank=True)
    fetched_at = models.DateTimeField(auto_now=True)

    @property
    def in_early_access(self) -> bool:
        from django.utils import timezone

        if self.early_access_ends_at is not None:
            return self.early_access_ends_at > timezone.now()
        return self.availability == "EarlyAccess"

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model", "external_id"], name="source_version_unique")]
        ordering = ["-published_at", "-id"]
        indexes = [models.Index(Upper("base_model"), name="source_version_base_upper")]  # as SourceModel's type

    def __str__(self) -> str:
        return f"{self.model.name} / {self.name or self.external_id}"


class SourceFile(HashFields):
    """One file a source publishes, with the hashes the source gives for it."""

    version = models.ForeignKey(SourceVersion, on_delete=models.CASCADE, related_name="files")
    external_id = models.CharField(max_length=500)  # Civitai file id, or the path in the repo
    name = models.CharField(max_length=500)
    size = models.BigIntegerField(null=True, blank=True)
    file_type = models.CharField(max_length=64, blank=True, default="")  # Model, VAE, Config, ...
    format = models.CharField(max_length=32, blank=True, default="")  # SafeTensor, PickleTensor, Other
    fp = models.CharField(max_length=16, blank=True, default="")  # fp16, fp32, bf16
    size_kind = models.CharField(max_length=16, blank=True, default="")  # full, pruned
    primary = models.BooleanField(default=False)
    git_sha1 = models.CharField(max_length=40, blank=True, default="", db_index=True)
    source_scan = models.CharField(max_length=32, blank=True, default="")  # Civitai's pickleScanResult
    source_scan_message = models.TextField(blank=True, default="")
    download_url = models.URLField(max_length=1000, blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["version", "external_id"], name="source_file_unique")]

    def __str__(self) -> str:
        return self.name


class CivitaiLookup(models.Model):
    """One hash asked of Civitai: its outcome, so nothing is asked twice within the cache time.

    Rows move pending -> running (claimed by one worker) -> hit | miss | error.
    A claim older than CLAIM_TIMEOUT is free again, so a dead worker loses nothing.
    """

    class Kind(models.TextChoices):
        SHA256 = "SHA256"
        AUTOV3 = "AutoV3"
        BLAKE3 = "BLAKE3"
        ANY = "any"  # a user's lookup of a short hash: Civitai matches any kind

    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        HIT = "hit"
        MISS = "miss"
        ERROR = "error"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    value = models.CharField(max_length=64)  # upper-case, as Civitai stores it
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING, db_index=True)
    version = models.ForeignKey(SourceVersion, null=True, blank=True, on_delete=models.SET_NULL)
    claimed_at = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)  # back-off after 429/5xx
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    checked_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "value"], name="civitai_lookup_unique")]


class Match(models.Model):
    """Why a local file is (or is related to) a known source file, with the evidence."""

    class Kind(models.TextChoices):
        EXACT = "exact", "exact copy"
        RENAMED = "renamed", "exact copy, renamed"
        SAME_WEIGHTS = "same-weights", "same tensor data, header edited"
        CONVERTED = "converted", "same weights, other container"
        PRECISION = "precision", "same weights, other precision"
        PARTIAL = "partial", "shares components"
        SHORT_HASH = "short-hash", "only a short hash agrees (weak)"
        # The owner's own statement ("this file is that version"), no evidence from the bytes:
        # weakest but explicit, never byte-exact, and never shown to anyone but the owner.
        MANUAL = "manual", "linked by you"

    STRENGTH = {"exact": 0, "renamed": 0, "same-weights": 1, "converted": 2, "precision": 3, "partial": 4,
                "short-hash": 5, "manual": 6}

    local_file = models.ForeignKey(LocalFile, on_delete=models.CASCADE, related_name="matches")
    source_file = models.ForeignKey(SourceFile, on_delete=models.CASCADE, related_name="matches")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    evidence = models.TextField()
    via = models.ForeignKey(LocalFile, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    share = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # local_file.owner and source_file.version.model, copied so that "the models of my files" and "my files
    # matching a model named ..." are ranges of one index instead of a walk from every one of the owner's
    # files through SourceFile and SourceVersion (issue #14: 40-55 ms of the 50 ms My files and catalog
    # searches at 10,000 files). Neither ever changes: files keep their owner, and a source file belongs
    # to one version of one model for good (catalog_store keys them so). save() fills them; bulk writers
    # call fill_copies(). Deleting a file or a source file deletes its matches, hence DO_NOTHING.
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, related_name="+", db_index=False)
    model = models.ForeignKey(SourceModel, on_delete=models.DO_NOTHING, related_name="+", db_index=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["local_file", "source_file", "kind"], name="match_unique")]
        indexes = [models.Index(fields=["kind"]),
                   models.Index(fields=["owner", "model", "local_file"], name="match_owner_model")]

    @classmethod
    def fill_copies(cls, matches: list["Match"]) -> list["Match"]:
        """Set owner and model on unsaved matches, in two queries whatever their number."""
        need_owner = {m.local_file_id for m in matches if m.owner_id is None}
        need_model = {m.source_file_id for m in matches if m.model_id is None}
        owners = dict(LocalFile.objects.filter(pk__in=need_owner).values_list("pk", "owner_id")) if need_owner else {}
        models_ = (dict(SourceFile.objects.filter(pk__in=need_model).values_list("pk", "version__model_id"))
                   if need_model else {})
        for m in matches:
            if m.owner_id is None:
                m.owner_id = owners.get(m.local_file_id)
            if m.model_id is None:
                m.model_id = models_.get(m.source_file_id)
        return matches

    def save(self, *args, **kwargs):
        if self.owner_id is None or self.model_id is None:
            Match.fill_copies([self])
        super().save(*args, **kwargs)


class Job(models.Model):
    """Longer work started from the web or API (index a Hub repo, verify a download, convert a checkpoint),
    with progress."""

    class Kind(models.TextChoices):
        HF_INDEX = "hf_index", "index a Hugging Face repo"
        HF_VERIFY = "hf_verify", "verify a download against the Hub"
        CONVERT = "convert", "convert to safetensors"
        # The duplicate actions (services/file_actions.py): params say which files, result logs each one.
        HARDLINK = "hardlink", "replace exact copies with hard links"
        QUARANTINE = "quarantine", "move files into quarantine"
        RESTORE = "restore", "restore files from quarantine"
        PURGE = "purge", "delete quarantined files for good"

    FILE_ACTION_KINDS = frozenset({"hardlink", "quarantine", "restore", "purge"})

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        ERROR = "error"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    params = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress_done = models.BigIntegerField(default=0)
    progress_total = models.BigIntegerField(default=0)
    message = models.TextField(blank=True, default="")
    result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at", "-id"], name="job_owner_recent")]

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.DONE, self.Status.ERROR}

    @property
    def is_file_action(self) -> bool:
        return self.kind in self.FILE_ACTION_KINDS


class QuarantineEntry(models.Model):
    """A file a duplicate action moved into quarantine: where it was and where it is now.

    Exists while the file is quarantined: restoring it back deletes the entry, purging deletes the
    file for good and its LocalFile row (and so this entry) with it.
    """

    class MovedBy(models.TextChoices):
        RENAME = "rename", "renamed (same filesystem)"
        COPY = "copy", "copied, then the original deleted (another filesystem)"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quarantine_entries")
    local_file = models.OneToOneField(LocalFile, on_delete=models.CASCADE, related_name="quarantine")
    original_path = models.TextField()
    quarantine_path = models.TextField()
    size = models.BigIntegerField()
    moved_by = models.CharField(max_length=8, choices=MovedBy.choices, default=MovedBy.RENAME)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at", "-id"], name="quarantine_owner_recent")]

    def __str__(self) -> str:
        return self.original_path


class ModelRoot(models.Model):
    """A folder on the server that the users and groups named here may register files under.

    MODELXREF_MODEL_ROOTS bounds what the server may read at all; these rows split it between
    users (a row outside it grants nothing). With no rows at all, a single-user install, every
    user may register under every env root. The rule lives in paths.model_roots_for(user).
    """

    path = models.CharField(max_length=1024, unique=True,
                            help_text="an absolute folder inside MODELXREF_MODEL_ROOTS (symlinks are resolved on save)")
    users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="model_roots")
    groups = models.ManyToManyField("auth.Group", blank=True, related_name="model_roots")
    note = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["path"]

    def __str__(self) -> str:
        return self.path

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from models_catalog.services.paths import model_roots, normalise_root

        try:
            self.path = str(normalise_root(self.path))
        except ValueError as exc:
            raise ValidationError({"path": str(exc)}) from None
        server = model_roots()
        if not server:
            raise ValidationError({"path": "set MODELXREF_MODEL_ROOTS first: it bounds which folders the server may read"})
        if not any(Path(self.path).is_relative_to(root) for root in server):
            shown = ", ".join(str(r) for r in server)
            raise ValidationError({"path": f"{self.path} is outside MODELXREF_MODEL_ROOTS ({shown}): it would grant nothing"})


class ApiToken(models.Model):
    """An API key, stored as its SHA-256 only: the key itself is shown once, when it is made.

    The key is random (238 bits), so a plain SHA-256 cannot be reversed or guessed and can be
    looked up by equality; `prefix` (the key's first characters) lets people tell their keys apart.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=16)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"


# --- Preview images and per-user display settings (issue #12) ---------------


class SourceImage(models.Model):
    """One of a Civitai version's images[]: what Civitai says of it, and our re-encoded thumbnail.

    Only a thumbnail we re-encoded ourselves is kept (never the downloaded bytes); `state` says
    whether it is there, and a failure keeps its reason so pages can say why there is no image.
    """

    class State(models.TextChoices):
        LISTED = "listed", "listed (not downloaded)"  # beyond PREVIEWS_PER_VERSION, or not asked yet
        DONE = "done", "downloaded"
        FAILED = "failed", "failed"

    version = models.ForeignKey(SourceVersion, on_delete=models.CASCADE, related_name="images")
    position = models.PositiveIntegerField()  # order in Civitai's images[]: the first is the cover
    url = models.URLField(max_length=1000)
    nsfw_level = models.PositiveIntegerField(default=0)  # Civitai's 1 PG, 2 PG-13, 4 R, 8 X, 16 XXX; 0 unknown
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    blurhash = models.CharField(max_length=100, blank=True, default="")
    meta = models.JSONField(default=dict, blank=True)  # generation parameters, capped (catalog_store)
    state = models.CharField(max_length=16, choices=State.choices, default=State.LISTED)
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    attempted_at = models.DateTimeField(null=True, blank=True)
    thumb_name = models.CharField(max_length=100, blank=True, default="")  # file name under PREVIEW_DIR

    class Meta:
        ordering = ["version", "position"]
        constraints = [models.UniqueConstraint(fields=["version", "position"], name="source_image_unique")]

    def __str__(self) -> str:
        return self.url


class UserPreferences(models.Model):
    """Display settings of one user; a missing row means the defaults."""

    DEFAULT_NSFW_MAX_LEVEL = 1  # Civitai's PG: anything above is blurred until clicked

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preferences")
    # Images with a Civitai nsfwLevel above this are shown blurred; 0 blurs every image.
    nsfw_max_level = models.PositiveIntegerField(default=DEFAULT_NSFW_MAX_LEVEL)


class WorkerHeartbeat(models.Model):
    """A celery worker's proof of life, one row per worker name: written when it is ready and every
    HEARTBEAT_SECONDS after, deleted at a clean shutdown. A row older than STALLED_AFTER_SECONDS is a
    worker that died; `register --wait` reads them to say "no worker is running" instead of waiting."""

    name = models.CharField(max_length=255, unique=True)  # celery's node name, e.g. hashing@host
    queues = models.CharField(max_length=500, blank=True, default="")  # the queues it consumes, comma-separated
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.name
