"""Every table can be looked at in the admin: registered, or shown inline on its parent's page."""
from django.apps import apps
from django.contrib import admin

# Rewritten from LocalFile.fingerprint whenever it changes (matching.local_components_sync): nothing to edit.
DERIVED = {"LocalComponent"}


def test_every_model_is_in_the_admin():
    inlines = {inline.model for model_admin in admin.site._registry.values() for inline in model_admin.inlines}
    missing = [m.__name__ for m in apps.get_app_config("models_catalog").get_models()
               if m not in admin.site._registry and m not in inlines and m.__name__ not in DERIVED]
    assert missing == []
