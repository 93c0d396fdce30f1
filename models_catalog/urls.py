from django.urls import path

from models_catalog import views

app_name = "catalog"
urlpatterns = [
    path("", views.file_list, name="file_list"),
    path("files/<int:pk>/", views.file_detail, name="file_detail"),
    path("upload/", views.upload, name="upload"),
]
