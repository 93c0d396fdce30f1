"""REST API routes: /api/v1/... , the OpenAPI schema at /api/schema/ and its docs at /api/docs/."""
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from models_catalog import api, api_actions, api_links
from models_catalog.api_errors import api_not_found

files = api.LocalFileViewSet
models = api.SourceModelViewSet
jobs = api.JobViewSet

v1 = [
    path("auth/token/", api.TokenView.as_view(), name="auth-token"),
    path("lookup/", api.LookupView.as_view(), name="lookup"),
    path("files/", files.as_view({"get": "list"}), name="file-list"),
    path("files/upload/", api.LocalFileUploadView.as_view(), name="file-upload"),
    path("files/register/", api.LocalFileRegisterView.as_view(), name="file-register"),
    path("files/push/", api.LocalFilePushView.as_view(), name="file-push"),
    path("files/<int:pk>/", files.as_view({"get": "retrieve", "delete": "destroy"}), name="file-detail"),
    path("files/<int:pk>/convert/", api.LocalFileConvertView.as_view(), name="file-convert"),
    path("files/<int:pk>/link/", api_links.LocalFileLinkView.as_view(), name="file-link"),
    path("models/", models.as_view({"get": "list"}), name="model-list"),
    path("models/<int:pk>/", models.as_view({"get": "retrieve"}), name="model-detail"),
    path("versions/<int:pk>/", api.SourceVersionViewSet.as_view({"get": "retrieve"}), name="version-detail"),
    path("duplicates/", api.DuplicatesView.as_view(), name="duplicates"),
    path("duplicates/actions/", api_actions.DuplicateActionView.as_view(), name="duplicate-actions"),
    path("quarantine/", api_actions.QuarantineListView.as_view(), name="quarantine-list"),
    path("quarantine/restore/", api_actions.QuarantineRestoreView.as_view(), name="quarantine-restore"),
    path("quarantine/purge/", api_actions.QuarantinePurgeView.as_view(), name="quarantine-purge"),
    path("jobs/", jobs.as_view({"get": "list"}), name="job-list"),
    path("jobs/hf-index/", api.HfIndexJobView.as_view(), name="job-hf-index"),
    path("jobs/hf-verify/", api.HfVerifyJobView.as_view(), name="job-hf-verify"),
    path("jobs/<int:pk>/", jobs.as_view({"get": "retrieve"}), name="job-detail"),
]

app_name = "api"
urlpatterns = [
    path("v1/", include(v1)),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    # Anything else under /api/ answers 404 in the API's error format, not as an HTML page.
    re_path(r"^[\s\S]*$", api_not_found),  # not ".*": a path with a newline is unknown too
]
