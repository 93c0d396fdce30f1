"""REST API of the duplicate actions: act on duplicates, list the quarantine, restore, purge.

Every id a request names must be one of the caller's own files or quarantine entries (staff too:
nobody acts on someone else's files); otherwise the answer is 404, as for any object that is not
yours. An action answers with its Job: 202 while it is queued (it runs on a worker, near the disks),
200 for a dry run, which runs at once (no file is read or changed) and holds its plan in `result`.
"""
from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from models_catalog import serializers as s
from models_catalog.api import ApiCursorPagination, BodyLimitMixin, errors
from models_catalog.api_errors import ApiError
from models_catalog.models import LocalFile, QuarantineEntry
from models_catalog.services.duplicates import PREFERENCES
from models_catalog.services.duplicate_actions import ACTIONS, action_params, group_plan_for
from models_catalog.services.file_action_jobs import file_action_job_create

MAX_IDS = 1000
MAX_ID = 2**62  # ids beyond any database's integer: refused as input, not an overflow inside a query


def _ids(help_text: str, *, required: bool = True) -> serializers.ListField:
    return serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=MAX_ID), min_length=1,
                                 max_length=MAX_IDS, required=required, help_text=help_text)


class DuplicateActionRequestSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=ACTIONS, help_text=(
        "hardlink: replace exact copies with hard links to the keeper (both re-hashed first); "
        "quarantine: move files into the quarantine folder (restore or purge them later)"))
    group = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID, help_text=(
        "the id of any member of a group from GET /duplicates/ (e.g. its keep_id): act on that group's exact "
        "copies of its keeper, as the files are grouped now"))
    file_ids = _ids("instead of a group: the files to act on (hardlink: the copies)", required=False)
    keeper_id = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID,
                                         help_text="hardlink with file_ids: the file the copies become hard links to")
    prefer = serializers.ChoiceField(choices=list(PREFERENCES), default="lossless",
                                     help_text="with group: which copy is the keeper (as GET /duplicates/ `prefer`)")
    dry_run = serializers.BooleanField(default=False, help_text="only report what would happen and the bytes it would free")

    def validate(self, data):
        if ("group" in data) == ("file_ids" in data):
            raise serializers.ValidationError("give either group or file_ids")
        if "file_ids" in data and data["action"] == "hardlink" and "keeper_id" not in data:
            raise serializers.ValidationError({"keeper_id": ["hardlink with file_ids needs the keeper_id"]})
        return data


class RestoreRequestSerializer(serializers.Serializer):
    entry_ids = _ids("quarantine entries to put back where they were (GET /quarantine/)")
    dry_run = serializers.BooleanField(default=False)


class PurgeRequestSerializer(serializers.Serializer):
    entry_ids = _ids("quarantine entries to delete for good; leave it out for every one of yours", required=False)
    dry_run = serializers.BooleanField(default=False, help_text="only report what would be deleted and the bytes freed")


class QuarantineEntrySerializer(serializers.ModelSerializer):
    file_id = serializers.IntegerField(source="local_file_id")
    name = serializers.CharField(source="local_file.name")

    class Meta:
        model = QuarantineEntry
        fields = ["id", "file_id", "name", "original_path", "quarantine_path", "size", "moved_by", "created_at"]


def _not_yours(kind: str, ids) -> ApiError:
    shown = ", ".join(str(i) for i in sorted(ids)[:10])
    return ApiError(f"no such {kind} (or it is not yours): {shown}", code="not_found", status_code=status.HTTP_404_NOT_FOUND)


def _job_response(job, dry_run: bool) -> Response:
    return Response(s.JobSerializer(job).data, status=status.HTTP_200_OK if dry_run else status.HTTP_202_ACCEPTED)


ACTION_RESPONSES = {200: OpenApiResponse(s.JobSerializer, description="a dry run, finished: the plan is in result"),
                    202: OpenApiResponse(s.JobSerializer, description="queued: follow it at GET /jobs/{id}/")}


class DuplicateActionView(BodyLimitMixin, APIView):
    """Reclaim space from duplicates without losing anything: replace exact copies with hard links to
    their keeper, or move them into quarantine. Name a group (its exact copies of the keeper are
    chosen) or the files. Only your own files registered in place under your model roots are
    changed; every file is checked again when the job runs, and what cannot be done safely is
    skipped with the reason (the job's `result.items`)."""

    parser_classes = [JSONParser]

    @extend_schema(operation_id="duplicates_actions", request=DuplicateActionRequestSerializer,
                   responses={**ACTION_RESPONSES, **errors(400, 401, 404, 413, 503)}, tags=["files"])
    def post(self, request):
        body = DuplicateActionRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        action = data["action"]
        if "group" in data:
            plan = group_plan_for(owner=request.user, file_id=data["group"], action=action, prefer_precision=data["prefer"])
            if plan is None:
                raise ApiError(f"no duplicate group of yours holds file {data['group']}", code="not_found",
                               status_code=status.HTTP_404_NOT_FOUND)
            if not plan.file_ids:
                raise ApiError("nothing to do: the group holds no exact copy of its keeper", code="nothing_to_do")
            kind, params = action_params(plan, action=action)
        else:
            wanted = set(data["file_ids"]) | ({data["keeper_id"]} if action == "hardlink" else set())
            mine = set(LocalFile.objects.filter(owner=request.user, pk__in=wanted).values_list("pk", flat=True))
            if wanted - mine:
                raise _not_yours("file", wanted - mine)
            kind, params = action_params(data["file_ids"], action=action, keeper_id=data.get("keeper_id"))
        job = file_action_job_create(owner=request.user, kind=kind, params=params, dry_run=data["dry_run"])
        return _job_response(job, data["dry_run"])


class QuarantineListView(generics.ListAPIView):
    """Your files in quarantine: where each was and where it is now."""

    serializer_class = QuarantineEntrySerializer
    pagination_class = ApiCursorPagination
    filter_backends = []

    def get_queryset(self):
        return QuarantineEntry.objects.filter(owner=self.request.user).select_related("local_file")

    @extend_schema(operation_id="quarantine_list", responses={200: QuarantineEntrySerializer(many=True), **errors(400, 401)},
                   tags=["files"])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


def _own_entries(user, ids) -> None:
    mine = set(QuarantineEntry.objects.filter(owner=user, pk__in=ids).values_list("pk", flat=True))
    if set(ids) - mine:
        raise _not_yours("quarantine entry", set(ids) - mine)


class QuarantineRestoreView(BodyLimitMixin, APIView):
    """Put quarantined files back where they were. A file whose original path is taken now, or no
    longer under your model roots, stays in quarantine (skipped, with the reason)."""

    parser_classes = [JSONParser]

    @extend_schema(operation_id="quarantine_restore", request=RestoreRequestSerializer,
                   responses={**ACTION_RESPONSES, **errors(400, 401, 404, 413, 503)}, tags=["files"])
    def post(self, request):
        body = RestoreRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        ids = body.validated_data["entry_ids"]
        _own_entries(request.user, ids)
        dry_run = body.validated_data["dry_run"]
        job = file_action_job_create(owner=request.user, kind="restore", params={"entry_ids": ids}, dry_run=dry_run)
        return _job_response(job, dry_run)


class QuarantinePurgeView(BodyLimitMixin, APIView):
    """Delete quarantined files for good (the named entries, or all of yours) and forget their rows;
    `result.bytes_freed` says what it freed (a file with other hard links frees nothing)."""

    parser_classes = [JSONParser]

    @extend_schema(operation_id="quarantine_purge", request=PurgeRequestSerializer,
                   responses={**ACTION_RESPONSES, **errors(400, 401, 404, 413, 503)}, tags=["files"])
    def post(self, request):
        body = PurgeRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        ids = body.validated_data.get("entry_ids")
        if ids is not None:
            _own_entries(request.user, ids)
        dry_run = body.validated_data["dry_run"]
        job = file_action_job_create(owner=request.user, kind="purge", params={"entry_ids": ids}, dry_run=dry_run)
        return _job_response(job, dry_run)
