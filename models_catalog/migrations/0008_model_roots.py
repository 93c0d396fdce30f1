"""ModelRoot: which users and groups may register under which folder (none: the env roots for everyone)."""
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("models_catalog", "0007_search_trigram_indexes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ModelRoot",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("path", models.CharField(help_text="an absolute folder inside MODELXREF_MODEL_ROOTS (symlinks are resolved on save)", max_length=1024, unique=True)),
                ("note", models.CharField(blank=True, default="", max_length=255)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("groups", models.ManyToManyField(blank=True, related_name="model_roots", to="auth.group")),
                ("users", models.ManyToManyField(blank=True, related_name="model_roots", to=settings.AUTH_USER_MODEL)),
            ],
            options={"ordering": ["path"]},
        ),
    ]
