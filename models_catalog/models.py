"""Every table of ModelXRef. Only this app writes to the database."""
from __future__ import annotations

from django.conf import settings
from django.db import models


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
    error = models.TextField(blank=True, default="")
    # Bumped on every progress write: a stale heartbeat on an unfinished row means its worker died.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    stage_started_at = models.DateTimeField(null=True, blank=True)

    # Filled by the analysis stage (format sniffing, pickle scan, fingerprint).
    format = models.CharField(max_length=32, blank=True, default="")
    safety_verdict = models.CharField(max_length=16, blank=True, default="")
    safety_findings = models.JSONField(default=list, blank=True)
    fingerprint = models.JSONField(null=True, blank=True)
    content_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    precision_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    analysis_error = models.TextField(blank=True, default="")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    hashed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "origin", "host", "path"], name="local_file_unique_path"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.DONE, self.Status.ERROR}

    @property
    def progress_percent(self) -> int:
        if self.status == self.Status.DONE:
            return 100
        if not self.bytes_total:
            return 0
        return min(100, int(self.bytes_done * 100 / self.bytes_total))


class HashFields(models.Model):
    """The six ecosystem hashes, lower-case hex; indexed for lookups."""

    sha256 = models.CharField(max_length=64, blank=True, default="", db_index=True)
    autov1 = models.CharField(max_length=8, blank=True, default="", db_index=True)
    autov2 = models.CharField(max_length=10, blank=True, default="", db_index=True)
    autov3 = models.CharField(max_length=12, blank=True, default="", db_index=True)
    autov3_full = models.CharField(max_length=64, blank=True, default="")
    crc32 = models.CharField(max_length=8, blank=True, default="", db_index=True)
    blake3 = models.CharField(max_length=64, blank=True, default="", db_index=True)

    class Meta:
        abstract = True

    def civitai_form(self) -> dict[str, str | None]:
        """Hashes as Civitai prints them (upper-case; None where Civitai keeps none)."""
        return {
            "SHA256": self.sha256.upper() or None,
            "AutoV1": self.autov1.upper() or None,
            "AutoV2": self.autov2.upper() or None,
            "AutoV3": self.autov3.upper() or None,
            "CRC32": self.crc32.upper() or None,
            "BLAKE3": self.blake3.upper() or None,
        }


class FileHashes(HashFields):
    """Hashes of one LocalFile. For a diffusers folder: the folder digest; members hold the rest."""

    class Source(models.TextChoices):
        ENGINE = "engine", "computed here"
        PUSHED = "pushed", "computed by a remote machine"
        IMPORTED = "imported", "imported from another tool, unconfirmed"

    local_file = models.OneToOneField(LocalFile, on_delete=models.CASCADE, related_name="hashes")
    size = models.BigIntegerField()
    folder_digest = models.CharField(max_length=64, blank=True, default="", db_index=True)
    embedded_model_hash = models.CharField(max_length=128, blank=True, default="")
    embedded_legacy_hash = models.CharField(max_length=128, blank=True, default="")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.ENGINE)
    computed_at = models.DateTimeField(auto_now=True)

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
