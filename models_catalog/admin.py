from django.contrib import admin

from models_catalog.models import FileHashes, FolderMember, LocalFile


class FileHashesInline(admin.StackedInline):
    model = FileHashes
    extra = 0


@admin.register(LocalFile)
class LocalFileAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "origin", "status", "size", "safety_verdict", "created_at")
    list_filter = ("origin", "status", "safety_verdict")
    search_fields = ("name", "path", "hashes__sha256", "hashes__autov2")
    inlines = [FileHashesInline]


admin.site.register(FolderMember)
