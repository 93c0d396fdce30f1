from django.urls import path

from models_catalog import (
    views, views_actions, views_catalog, views_convert, views_links, views_previews, views_register, views_tools,
)

app_name = "catalog"
urlpatterns = [
    path("", views.file_list, name="file_list"),
    path("files/<int:pk>/", views.file_detail, name="file_detail"),
    path("files/<int:pk>/forget/", views.file_forget, name="file_forget"),
    path("files/<int:pk>/convert/", views_convert.file_convert, name="file_convert"),
    path("files/export-sidecars/", views.export_sidecars, name="export_sidecars"),
    path("files/<int:pk>/link/", views_links.file_link, name="file_link"),
    path("upload/", views.upload, name="upload"),
    path("register/", views_register.register_path, name="register"),
    path("catalog/", views_catalog.catalog, name="catalog"),
    path("models/<int:pk>/", views_catalog.model_page, name="model_detail"),
    path("lookup/", views_catalog.lookup, name="lookup"),
    path("duplicates/", views_tools.duplicates, name="duplicates"),
    path("duplicates/export.csv", views_tools.duplicates_export, {"fmt": "csv"}, name="duplicates_csv"),
    path("duplicates/export.json", views_tools.duplicates_export, {"fmt": "json"}, name="duplicates_json"),
    path("duplicates/actions/<str:action>/", views_actions.duplicate_action, name="duplicate_action"),
    path("quarantine/", views_actions.quarantine, name="quarantine"),
    path("quarantine/<str:op>/", views_actions.quarantine_action, name="quarantine_action"),
    path("actions/jobs/<int:pk>/", views_actions.action_job, name="action_job"),
    path("hf/", views_tools.hf_page, name="hf"),
    path("hf/index/", views_tools.hf_index, name="hf_index"),
    path("hf/verify/", views_tools.hf_verify, name="hf_verify"),
    path("jobs/<int:pk>/", views_tools.job_detail, name="job_detail"),
    path("tokens/", views_tools.tokens, name="tokens"),
    path("settings/", views_previews.user_settings, name="settings"),
    path("previews/<int:pk>.webp", views_previews.preview_image, name="preview_image"),
    path("previews/<int:pk>/blur.png", views_previews.preview_placeholder, name="preview_placeholder"),
    path("files/<int:pk>/preview.webp", views_previews.file_preview, name="file_preview"),
]
