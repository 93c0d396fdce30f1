from django.apps import AppConfig


class ModelsCatalogConfig(AppConfig):
    name = "models_catalog"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.db.backends.signals import connection_created

        from models_catalog import library_revision

        # Every process (web, workers, commands) watches its writes to what duplicate groups are made of.
        connection_created.connect(library_revision.install, dispatch_uid="modelxref-library-revision")
