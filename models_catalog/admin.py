from django.contrib import admin

from models_catalog.models import (
    ApiToken,
    CivitaiLookup,
    FileHashes,
    FolderMember,
    Job,
    LocalFile,
    Match,
    ModelRoot,
    QuarantineEntry,
    SourceFile,
    SourceModel,
    SourceImage,
    SourceVersion,
    UserPreferences,
    WorkerHeartbeat,
)


class FileHashesInline(admin.StackedInline):
    model = FileHashes
    extra = 0


class MatchInline(admin.TabularInline):
    model = Match
    fk_name = "local_file"
    extra = 0
    raw_id_fields = ("source_file", "via")


@admin.register(LocalFile)
class LocalFileAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "origin", "status", "format", "safety_verdict", "size", "created_at")
    list_filter = ("origin", "status", "safety_verdict", "format")
    search_fields = ("name", "path", "hashes__sha256", "hashes__autov2", "content_id")
    inlines = [FileHashesInline, MatchInline]


@admin.register(SourceModel)
class SourceModelAdmin(admin.ModelAdmin):
    list_display = ("name", "source", "type", "external_id", "fetched_at")
    list_filter = ("source", "type")
    search_fields = ("name", "external_id")


@admin.register(SourceVersion)
class SourceVersionAdmin(admin.ModelAdmin):
    list_display = ("__str__", "base_model", "external_id", "published_at")
    search_fields = ("name", "model__name", "external_id", "air")
    raw_id_fields = ("model",)


@admin.register(SourceFile)
class SourceFileAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "format", "fp", "size", "source_scan")
    search_fields = ("name", "sha256", "autov2", "blake3", "git_sha1")
    raw_id_fields = ("version",)


@admin.register(CivitaiLookup)
class CivitaiLookupAdmin(admin.ModelAdmin):
    list_display = ("kind", "value", "state", "checked_at", "duration_ms", "attempts", "last_error")
    list_filter = ("state", "kind")
    search_fields = ("value",)
    raw_id_fields = ("version",)


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("kind", "owner", "status", "message", "created_at")
    list_filter = ("kind", "status")


admin.site.register(FolderMember)


@admin.register(ModelRoot)
class ModelRootAdmin(admin.ModelAdmin):
    """Who may register under which folder. No rows: everyone may register under every env root."""

    list_display = ("path", "who", "note", "created_at")
    search_fields = ("path", "note", "users__username", "groups__name")
    filter_horizontal = ("users", "groups")

    @admin.display(description="users and groups")
    def who(self, root: ModelRoot) -> str:
        names = [u.username for u in root.users.all()] + [f"group {g.name}" for g in root.groups.all()]
        return ", ".join(names) or "nobody"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("users", "groups")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens can be seen and revoked here; they are made by their owner (the key is shown once, to them)."""

    list_display = ("prefix", "user", "name", "created_at", "last_used_at")
    search_fields = ("prefix", "name", "user__username")
    readonly_fields = ("user", "name", "prefix", "digest", "created_at", "last_used_at")
    list_select_related = ("user",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(QuarantineEntry)
class QuarantineEntryAdmin(admin.ModelAdmin):
    """Read-only: a row changes only with the file it describes (restore and purge move or delete it)."""

    list_display = ("original_path", "owner", "size", "moved_by", "created_at")
    search_fields = ("original_path", "quarantine_path")
    raw_id_fields = ("local_file", "job")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the file would stay in the quarantine folder with nothing pointing at it: purge it


@admin.register(SourceImage)
class SourceImageAdmin(admin.ModelAdmin):
    """Preview images of catalog versions: their download state and why one failed."""

    list_display = ("version", "position", "nsfw_level", "state", "attempts", "attempted_at")
    list_filter = ("state", "nsfw_level")
    search_fields = ("url", "error")
    raw_id_fields = ("version",)


@admin.register(UserPreferences)
class UserPreferencesAdmin(admin.ModelAdmin):
    list_display = ("user", "nsfw_max_level")
    raw_id_fields = ("user",)


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    # Written by the workers themselves (config/celery.py): shown to see which are alive, not edited.
    list_display = ("name", "queues", "started_at", "seen_at")
    readonly_fields = ("name", "queues", "started_at", "seen_at")
