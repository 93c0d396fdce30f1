"""REST API views (/api/v1/). Thin: they check input, call services, read rows.

Privacy rules every view follows:
- local files are fetched through `selectors.local_files_visible_to` (their
  own; staff everyone's, each row with its `owner`), jobs by owner, so another
  user's object is a 404, never a 403 (no hint that it exists); actions that
  change files filter by owner, staff included (see that selector);
- the shared catalog (models, versions) counts only the caller's own local
  files (`local_copies`); a model's or version's `my_local_files` lists the
  copies the caller may see (staff: everyone's, with `owner`), as the model page does;
- path refusals for paths outside the model roots say only that, so the API
  cannot be used to probe which server paths exist.
"""
from __future__ import annotations

import re
from dataclasses import asdict

from django.conf import settings
from django.db.models import Count, IntegerField, OuterRef, Prefetch, Subquery, Value
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import CursorPagination, PageNumberPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle, UserRateThrottle
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from models_catalog import serializers as s
from models_catalog.api_errors import ApiError
from models_catalog.models import Job, LocalFile, Match, Source, SourceFile, SourceModel, SourceVersion
from models_catalog.selectors import (
    FileQuery, catalog_text_parts, file_list_page, hash_search, local_files_visible_to, shown_matches,
)
from models_catalog.services.duplicates import PREFERENCES, duplicate_groups, shown_duplicate_groups
from models_catalog.services.huggingface import hf_index_job_create
from models_catalog.services.forget import local_file_forget
from models_catalog.services.convert import convert_job_create
from models_catalog.services.hf_verify_job import hf_verify_job_create
from models_catalog.services.enqueue import QueueUnavailable
from models_catalog.services.lookup import hash_fields_q, hash_lookup
from models_catalog.services.paths import PathRefused, refusal_reason
from models_catalog.services.push import PushRejected, pushed_files_store
from workers.convert import ConvertError
from models_catalog.services.register import local_file_register
from models_catalog.services.tokens import TokenRefused, api_token_create
from models_catalog.services.upload import UploadRefused, local_file_upload
from models_catalog.throttling import ScopedRateThrottle, UserRateThrottle
from models_catalog.upload_handlers import LimitedTemporaryFileUploadHandler
from workers.hash_parse import HashQueryError

# Multipart framing around an uploaded file adds a little to the declared length.
MULTIPART_SLACK_BYTES = 64 * 1024
GIT_SHA1 = re.compile(r"[0-9a-f]{40}")  # a Hub file's git blob id, as SourceFile.git_sha1 stores it


def errors(*codes: int) -> dict:
    """Error responses for extend_schema: all share the one error format."""
    meaning = {400: "invalid input", 401: "no or bad credentials", 403: "not allowed (or CSRF failed)",
               404: "no such object (or it is not yours)", 409: "conflicts with the object's state", 413: "request body too large", 429: "throttled",
               503: "the task queue (Redis) is unreachable: the work could not be queued (Retry-After says when to retry)"}
    return {code: OpenApiResponse(s.ErrorSerializer, description=meaning.get(code, "error")) for code in codes}


class ApiCursorPagination(CursorPagination):
    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = 200


class BodyLimitMixin:
    """DRF reads JSON bodies from the stream, past Django's DATA_UPLOAD_MAX_MEMORY_SIZE check:
    refuse oversized bodies up front so a huge JSON never lands in memory."""

    def initial(self, request, *args, **kwargs):
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit and declared > limit:
            raise ApiError(f"the request body is {declared:,} bytes; the limit is {limit:,} bytes", code="too_large",
                           status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        return super().initial(request, *args, **kwargs)


# --- auth ---------------------------------------------------------------------------


class TokenView(BodyLimitMixin, APIView):
    """Trade a username and password for a NEW API token (send it as `Authorization: Token <key>`).

    The key is in this answer only: the server keeps just its hash. Each call makes another token
    (each machine or script can have its own); list and revoke them on the API page."""

    authentication_classes = []  # the password in the body is the credential
    permission_classes = []
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(operation_id="auth_token_create", request=s.TokenRequestSerializer,
                   responses={200: s.TokenResponseSerializer, **errors(400, 413, 429)}, auth=[], tags=["auth"])
    def post(self, request):
        body = s.TokenRequestSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        try:
            token, key = api_token_create(user=body.validated_data["user"], name=body.validated_data["name"])
        except TokenRefused as exc:
            raise ApiError(str(exc), code="too_many_tokens") from None
        # 200, not 201: scripts written against the earlier get-or-create endpoint check for 200.
        return Response({"token": key, "prefix": token.prefix, "name": token.name, "created_at": token.created_at})


# --- lookup -----------------------------------------------------------------------------


class LookupView(BodyLimitMixin, APIView):
    """Identify hashes: any kind (SHA256, AutoV1/2/3, CRC32, BLAKE3, prefixed forms) or a pasted infotext.

    Looks in the shared catalog, then Civitai (when enabled) for what is unknown,
    then in YOUR files ("my files" results; staff see everyone's)."""

    parser_classes = [JSONParser]

    throttle_classes = [UserRateThrottle, ScopedRateThrottle]
    throttle_scope = "lookup"

    def _lookup(self, request, text: str) -> Response:
        try:
            results = hash_lookup(text=text, user=request.user)
        except HashQueryError as exc:
            raise ApiError(str(exc), code="not_a_hash") from None
        return Response([r.to_json() for r in results])

    @extend_schema(operation_id="lookup_get", parameters=[s.LookupQuerySerializer],
                   responses={200: s.LookupResultSerializer(many=True), **errors(400, 401, 429)}, tags=["lookup"])
    def get(self, request):
        query = s.LookupQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return self._lookup(request, query.validated_data["q"])

    @extend_schema(operation_id="lookup_post", request=s.LookupRequestSerializer,
                   responses={200: s.LookupResultSerializer(many=True), **errors(400, 401, 413, 429)}, tags=["lookup"])
    def post(self, request):
        body = s.LookupRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._lookup(request, body.validated_data["text"])


# --- local files -----------------------------------------------------------------------------

MAX_FILE_PAGE_SIZE = 200


@extend_schema(tags=["files"])
class LocalFileViewSet(BodyLimitMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                       viewsets.GenericViewSet):
    """Your model files: registered in place, uploaded, or pushed. The list is My files (same filters,
    sorts and keyset cursor, through selectors.file_list_page); staff may open anyone's file by id and
    list everyone's with `scope=all`, each row with its `owner` (empty for your own). Staff may also
    forget anyone's row (the long-standing answer); every other action is owner-only."""

    queryset = LocalFile.objects.none()  # for the schema; get_queryset picks the rows
    pagination_class = None  # the list pages itself (keyset over any sort)
    filter_backends = []

    def get_queryset(self):
        qs = local_files_visible_to(user=self.request.user).select_related("hashes", "owner")
        return qs.prefetch_related(
            "members", Prefetch("matches", queryset=Match.objects.filter(shown_matches(self.request.user))
                                .select_related("source_file__version__model", "via")),
        )

    def get_serializer_class(self):
        return s.LocalFileDetailSerializer if self.action == "retrieve" else s.LocalFileListSerializer

    @extend_schema(parameters=[s.FileListParamsSerializer], responses={200: s.LocalFilePageSerializer, **errors(400, 401)})
    def list(self, request, *args, **kwargs):
        params = s.FileListParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        wanted = dict(params.validated_data)
        page_size = min(wanted.pop("page_size"), MAX_FILE_PAGE_SIZE)
        page = file_list_page(FileQuery(user=request.user, **{k: v for k, v in wanted.items() if v}), page_size=page_size)
        context = {**self.get_serializer_context(), "identities": {r.file.pk: r.identity for r in page.rows}}
        next_url = replace_query_param(request.build_absolute_uri(), "cursor", page.next_cursor) if page.next_cursor else None
        return Response({"next": next_url,
                         "results": s.LocalFileListSerializer([r.file for r in page.rows], many=True, context=context).data})

    @extend_schema(responses={200: s.LocalFileDetailSerializer, **errors(401, 404)})
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(description=("Forget the file: the row, its hashes and matches go. An uploaded file's stored copy "
                                "is deleted too (unless another file uses it) and the answer says how many bytes "
                                "were freed; a file registered in place or pushed is never touched on disk. "
                                "A file in quarantine is refused (409): restore or purge it."),
                   responses={200: s.ForgottenSerializer, **errors(401, 404, 409)})
    def destroy(self, request, *args, **kwargs):
        lf = self.get_object()
        if lf.quarantined_at is not None:
            raise ApiError("the file is in quarantine: restore it (POST /quarantine/restore/) or purge it "
                           "(POST /quarantine/purge/) instead", code="in_quarantine", status_code=status.HTTP_409_CONFLICT)
        return Response(s.ForgottenSerializer(local_file_forget(local_file=lf)).data)


class LocalFileUploadView(APIView):
    """Upload a model file (multipart field `file`). It is streamed to disk and refused while
    streaming once it passes MAX_UPLOAD_BYTES (413); then it is hashed like any other file, unless
    you already have a file with the same SHA256 (200, `already_had`: nothing is stored twice)."""

    parser_classes = [MultiPartParser]

    def initialize_request(self, request, *args, **kwargs):
        # Upload handlers can only be swapped before anything reads the body, and the
        # session CSRF check reads it during authentication: so swap them here, first.
        drf_request = super().initialize_request(request, *args, **kwargs)
        if request.method == "POST":
            request.upload_handlers = [LimitedTemporaryFileUploadHandler(request)]
        return drf_request

    @extend_schema(operation_id="files_upload", request={"multipart/form-data": s.UploadRequestSerializer},
                   description=("201: stored and queued for hashing. 200: you already have a finished file with "
                                "the same SHA256 (only your own files count): nothing was stored, and the answer is "
                                "that file with `already_had: true`."),
                   responses={201: s.UploadedFileSerializer, 200: s.UploadedFileSerializer,
                              **errors(400, 401, 413, 503)}, tags=["files"])
    def post(self, request):
        limit = settings.MAX_UPLOAD_BYTES
        too_large = ApiError(f"the upload is larger than the limit of {limit:,} bytes", code="too_large",
                             status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit + MULTIPART_SLACK_BYTES:
            raise too_large
        uploaded = request.FILES.get("file")
        if any(getattr(h, "over_limit", False) for h in request._request.upload_handlers):
            raise too_large
        if uploaded is None:
            raise ApiError("no file was sent: put the model file in the multipart field 'file'", code="no_file")
        try:
            result = local_file_upload(uploaded=uploaded, owner=request.user)
        except UploadRefused as exc:
            if uploaded.size and uploaded.size > limit:
                raise ApiError(str(exc), code="too_large", status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE) from None
            raise ApiError(str(exc), code="upload_refused") from None
        lf = get_object_or_404(LocalFile.objects.select_related("hashes"), pk=result.local_file.pk)
        context = {"request": request, "already_had": result.already_had}
        return Response(s.UploadedFileSerializer(lf, context=context).data,
                        status=status.HTTP_200_OK if result.already_had else status.HTTP_201_CREATED)


class LocalFileRegisterView(BodyLimitMixin, APIView):
    """Register files or folders in place on the server, under the model roots you were given (all
    of MODELXREF_MODEL_ROOTS on a single-user install; the folders staff assigned to you or your
    groups otherwise); the rows are yours alone. Folders are searched for model files; paths outside
    your roots are refused with the reason."""

    parser_classes = [JSONParser]

    @extend_schema(operation_id="files_register", request=s.RegisterRequestSerializer,
                   responses={200: s.RegisterOutcomeSerializer, **errors(400, 401, 413, 503)}, tags=["files"])
    def post(self, request):
        body = s.RegisterRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        outcome = local_file_register(paths=body.validated_data["paths"], owner=request.user)
        if outcome.queue_error:
            raise QueueUnavailable(outcome.queue_error)  # 503: the rows are kept and sent when the queue is back
        return Response({
            "counts": outcome.counts,  # a big folder's lists are its first SAMPLE_SIZE rows of each kind
            "queued": [lf.pk for lf in outcome.queued],
            "unchanged": [lf.pk for lf in outcome.unchanged],
            "failed": [lf.pk for lf in outcome.failed],
            "refused": [{"path": path, "reason": refusal_reason(path, why, user=request.user)} for path, why in outcome.refused],
        })


class LocalFileConvertView(BodyLimitMixin, APIView):
    """Convert one of your registered pickle checkpoints to safetensors, as a job, without ever running it.
    The file is scanned again when the job runs: only a `safe` verdict converts (`suspicious` with
    `allow_suspicious`); the output lands under your model roots, is verified (re-read, tensor by tensor,
    and by fingerprint) before it appears, and is registered like any file. The job's `result` says what
    was written, kept as metadata and dropped."""

    parser_classes = [JSONParser]

    @extend_schema(operation_id="files_convert", request=s.ConvertRequestSerializer,
                   responses={202: s.JobSerializer, **errors(400, 401, 404, 413, 503)}, tags=["files"])
    def post(self, request, pk: int):
        # Another user's file is a 404 like everywhere else; staff convert only their own files
        # (the output goes under the converting user's roots).
        lf = get_object_or_404(LocalFile.objects.filter(owner=request.user), pk=pk)
        body = s.ConvertRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            job = convert_job_create(owner=request.user, local_file=lf, out=data.get("out") or None, dtype=data["dtype"],
                                     allow_suspicious=data["allow_suspicious"], original=data["original"])
        except PathRefused as exc:
            raise ApiError(refusal_reason(data.get("out") or lf.path, str(exc), user=request.user),
                           code="path_refused") from None
        except ConvertError as exc:
            raise ApiError(str(exc), code="not_convertible", detail={"verdict": exc.verdict} if exc.verdict else None) from None
        return Response(s.JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class LocalFilePushView(BodyLimitMixin, APIView):
    """Store hashes computed on another machine (the `push` command). A record is a file (`hashes`)
    or a diffusers folder (`"kind": "folder"` and `folder`: its digest and weight-file members), stored
    as one folder like a registered one. Each record is checked on its own: bad ones are listed in
    `errors` by index, good ones are stored. At most 500 records per call."""

    parser_classes = [JSONParser]

    @extend_schema(operation_id="files_push", request=s.PushRequestDocSerializer,
                   responses={200: s.PushOutcomeSerializer, **errors(400, 401, 413, 503)}, tags=["files"])
    def post(self, request):
        body = s.PushRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            outcome = pushed_files_store(owner=request.user, host=body.validated_data["host"],
                                         files=body.validated_data["files"])
        except PushRejected as exc:
            raise ApiError(str(exc), code="push_rejected") from None
        return Response(asdict(outcome))


# --- the shared catalog ---------------------------------------------------------------------


class SourceModelFilter(filters.FilterSet):
    type = filters.CharFilter(lookup_expr="iexact", help_text="Checkpoint, LORA, VAE, ...")
    source = filters.ChoiceFilter(choices=Source.choices)
    base_model = filters.CharFilter(method="filter_base_model", help_text="a version's base model, e.g. SDXL 1.0")
    match = filters.ChoiceFilter(choices=Match.Kind.choices, method="filter_match",
                                 help_text="models one of YOUR files matches with this kind")
    mine = filters.BooleanFilter(method="filter_mine", help_text="true: only models you have a local copy of")
    search = filters.CharFilter(method="filter_search", help_text="part of the name, a trigger word, or any full hash")

    class Meta:
        model = SourceModel
        fields = ["type", "source"]

    def _my_matches(self):
        return Match.objects.filter(local_file__owner=self.request.user)

    def filter_base_model(self, queryset, name, value):
        return queryset.filter(pk__in=SourceVersion.objects.filter(base_model__iexact=value).values("model_id"))

    def filter_match(self, queryset, name, value):
        return queryset.filter(pk__in=self._my_matches().filter(kind=value).values("source_file__version__model_id"))

    def filter_mine(self, queryset, name, value):
        ids = self._my_matches().values("source_file__version__model_id")
        return queryset.filter(pk__in=ids) if value else queryset.exclude(pk__in=ids)

    def filter_search(self, queryset, name, value):
        # A UNION of index-served sets (the catalog page's, plus hashes): under one OR, PostgreSQL joined
        # every version to every file to test `trained_words LIKE ... OR git_sha1 = ...` (~450 ms at
        # 400,000 files for a common word), where each part alone is an index lookup.
        text = value.strip()
        parts = catalog_text_parts(text)
        if GIT_SHA1.fullmatch(text.lower()):  # a Hub file's git blob id
            parts.append(SourceFile.objects.filter(git_sha1=text.lower()).order_by().values("version__model_id"))
        candidates = [c for query in hash_search(text) for c in query.candidates]
        if candidates:
            parts.append(SourceFile.objects.filter(hash_fields_q(candidates, False)).order_by()
                         .values("version__model_id"))
        return queryset.filter(pk__in=parts[0].union(*parts[1:]))


def catalog_models(user):
    """Every catalog model, with its version count and how many of `user`'s files match it."""
    mine = (Match.objects.filter(source_file__version__model=OuterRef("pk"), local_file__owner=user)
            .values("source_file__version__model").annotate(n=Count("local_file", distinct=True)).values("n"))
    versions = (SourceVersion.objects.filter(model=OuterRef("pk")).values("model")
                .annotate(n=Count("pk")).values("n"))
    return SourceModel.objects.annotate(
        local_copies=Coalesce(Subquery(mine, output_field=IntegerField()), Value(0)),
        versions_count=Coalesce(Subquery(versions, output_field=IntegerField()), Value(0)),
    )


def my_matches_to(user, **where):
    """The matches of the files `user` may see to part of the catalog (the model page's "copies")."""
    return (Match.objects.filter(shown_matches(user), local_file__in=local_files_visible_to(user=user), **where)
            .select_related("local_file__owner", "source_file", "via").order_by("local_file_id", "pk"))


@extend_schema(tags=["catalog"])
class SourceModelViewSet(viewsets.ReadOnlyModelViewSet):
    """The identified catalog, shared by everyone: what Civitai and the Hub publish.
    `local_copies` counts only YOUR files; `my_local_files` lists the copies you may see (staff: everyone's,
    each with its `owner`), as the model page does."""

    queryset = SourceModel.objects.none()  # for the schema; get_queryset picks the rows
    pagination_class = ApiCursorPagination
    filterset_class = SourceModelFilter
    filter_backends = [filters.DjangoFilterBackend, OrderingFilter]
    ordering_fields = ["name", "id"]
    ordering = ["-id"]

    def get_queryset(self):
        qs = catalog_models(self.request.user).prefetch_related(
            Prefetch("versions", queryset=SourceVersion.objects.only("id", "model_id", "base_model")))
        if self.action == "retrieve":
            qs = catalog_models(self.request.user).prefetch_related(
                Prefetch("versions", queryset=SourceVersion.objects.prefetch_related("files")))
        return qs

    def get_serializer_class(self):
        return s.SourceModelDetailSerializer if self.action == "retrieve" else s.SourceModelListSerializer

    @extend_schema(responses={200: s.SourceModelListSerializer(many=True), **errors(400, 401)})
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(responses={200: s.SourceModelDetailSerializer, **errors(401, 404)})
    def retrieve(self, request, *args, **kwargs):
        model = self.get_object()
        context = {**self.get_serializer_context(), "my_matches": my_matches_to(request.user, source_file__version__model=model)}
        return Response(s.SourceModelDetailSerializer(model, context=context).data)


@extend_schema(tags=["catalog"])
class SourceVersionViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """One version of a catalog model (a Civitai version, or a Hub repo at one commit) with its files."""

    queryset = SourceVersion.objects.select_related("model").prefetch_related("files")
    serializer_class = s.SourceVersionDetailSerializer

    @extend_schema(responses={200: s.SourceVersionDetailSerializer, **errors(401, 404)})
    def retrieve(self, request, *args, **kwargs):
        version = self.get_object()
        context = {**self.get_serializer_context(), "my_matches": my_matches_to(request.user, source_file__version=version)}
        return Response(s.SourceVersionDetailSerializer(version, context=context).data)


# --- duplicates ---------------------------------------------------------------------------


class DuplicatesPagination(PageNumberPagination):
    """Groups are computed per request (lossless savings first), so plain page numbers are stable enough."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def paginated(self, groups: list, request, view) -> Response:
        page = self.paginate_queryset(groups, request, view=view)
        return Response({
            "count": len(groups), "next": self.get_next_link(), "previous": self.get_previous_link(),
            "lossless_bytes": sum(g.lossless_bytes for g in groups), "lossy_bytes": sum(g.lossy_bytes for g in groups),
            "reclaimable_bytes": sum(g.reclaimable_bytes for g in groups),
            "results": [g.to_json() for g in page],
        })


class DuplicatesView(APIView):
    """Groups of your files that hold the same model (renamed copies, other containers, other
    precisions), lossless savings first. Each member says how it relates to the group; the suggested
    keeper never drops precision unless `prefer` asks for a precision (then `warning` says what it
    discards). Staff may pass `all=true` for everyone's (still grouped per owner)."""

    @extend_schema(
        operation_id="duplicates_list",
        parameters=[
            OpenApiParameter("prefer", str, enum=list(PREFERENCES),
                             description="which copy to keep: `lossless` (default) keeps a highest-precision copy; "
                                         "a precision keeps copies in it and says what that discards"),
            OpenApiParameter("all", OpenApiTypes.BOOL, description="staff only: everyone's files"),
            OpenApiParameter("page", OpenApiTypes.INT, description="page number (1, 2, ...)"),
            OpenApiParameter("page_size", OpenApiTypes.INT, description="groups per page (default 50, at most 500)"),
        ],
        responses={200: s.DuplicatePageSerializer, **errors(400, 401, 403, 404)}, tags=["files"],
    )
    def get(self, request):
        prefer = request.query_params.get("prefer", "lossless")
        if prefer not in PREFERENCES:
            raise ApiError(f"prefer must be one of {', '.join(PREFERENCES)}", code="invalid_input",
                           detail={"prefer": ["not a valid choice"]})
        everyone = request.query_params.get("all", "").lower() in {"1", "true", "yes"}
        if everyone and not request.user.is_staff:
            raise ApiError("only staff may see everyone's duplicates", code="permission_denied",
                           status_code=status.HTTP_403_FORBIDDEN)
        groups = (duplicate_groups(owner=None, prefer_precision=prefer) if everyone
                  else shown_duplicate_groups(owner=request.user, prefer_precision=prefer))
        return DuplicatesPagination().paginated(groups, request, self)


# --- jobs -----------------------------------------------------------------------------------


@extend_schema(tags=["jobs"])
class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Your longer jobs (index a Hub repo, verify a download, convert a checkpoint) with their progress."""

    queryset = Job.objects.none()  # for the schema; get_queryset picks the rows
    serializer_class = s.JobSerializer
    pagination_class = ApiCursorPagination
    filterset_fields = ["kind", "status"]

    def get_queryset(self):
        return Job.objects.filter(owner=self.request.user)

    @extend_schema(responses={200: s.JobSerializer(many=True), **errors(400, 401)})
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(responses={200: s.JobSerializer, **errors(401, 404)})
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)


class HfIndexJobView(BodyLimitMixin, APIView):
    """Index a Hugging Face repo into the catalog (its files' sha256 / git sha1), as a job."""

    parser_classes = [JSONParser]

    @extend_schema(operation_id="jobs_hf_index", request=s.HfIndexRequestSerializer,
                   responses={202: s.JobSerializer, **errors(400, 401, 413, 503)}, tags=["jobs"])
    def post(self, request):
        body = s.HfIndexRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job = hf_index_job_create(owner=request.user, repo_id=body.validated_data["repo_id"],
                                  revision=body.validated_data.get("revision"), repo_type=body.validated_data["repo_type"])
        return Response(s.JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class HfVerifyJobView(BodyLimitMixin, APIView):
    """Verify a downloaded folder on the server (inside your model roots) against a Hub repo, as a job."""

    parser_classes = [JSONParser]

    @extend_schema(operation_id="jobs_hf_verify", request=s.HfVerifyRequestSerializer,
                   responses={202: s.JobSerializer, **errors(400, 401, 413, 503)}, tags=["jobs"])
    def post(self, request):
        body = s.HfVerifyRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            job = hf_verify_job_create(owner=request.user, repo_id=data["repo_id"], local_dir=data["local_dir"],
                                       revision=data.get("revision"), repo_type=data["repo_type"])
        except PathRefused as exc:
            raise ApiError(refusal_reason(data["local_dir"], str(exc), user=request.user), code="path_refused") from None
        return Response(s.JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
