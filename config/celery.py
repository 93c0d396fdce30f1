import os

from celery import Celery
from celery.signals import worker_ready

from config import filesystem_broker  # noqa: F401  (registers the embedded broker's transport alias)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("modelxref")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])


@worker_ready.connect
def reap_when_a_worker_starts(sender=None, **kwargs):
    """A worker (re)starting is when earlier ones may have died: look for their rows now, not in a minute."""
    sender.app.send_task("workers.tasks.local_files_reap")
