import os

from celery import Celery
import threading

from celery.signals import worker_ready, worker_shutdown

from config import filesystem_broker  # noqa: F401  (registers the embedded broker's transport alias)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("modelxref")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])


@worker_ready.connect
def reap_when_a_worker_starts(sender=None, **kwargs):
    """A worker (re)starting is when earlier ones may have died: look for their rows now, not in a minute."""
    sender.app.send_task("workers.tasks.local_files_reap")


_beat_stop = threading.Event()


@worker_ready.connect
def beat_while_alive(sender=None, **kwargs):
    """Write this worker's WorkerHeartbeat now and every HEARTBEAT_SECONDS from a thread of the main
    process: when the worker dies the beat stops with it, and `register --wait` can say no worker runs."""
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from models_catalog.services.worker_liveness import worker_beat

    _beat_stop.clear()
    name, started_at = sender.hostname, timezone.now()
    queues = list(sender.app.amqp.queues.consume_from)

    def loop():
        while True:
            try:
                worker_beat(name=name, queues=queues, started_at=started_at)
            except Exception:  # a missed beat only makes the worker look dead sooner; never stop the worker
                import logging
                logging.getLogger(__name__).exception("worker heartbeat failed")
            finally:
                connection.close()  # this thread's own connection, not held between beats
            if _beat_stop.wait(settings.HEARTBEAT_SECONDS):
                return

    threading.Thread(target=loop, name="worker-heartbeat", daemon=True).start()


@worker_shutdown.connect
def forget_at_shutdown(sender=None, **kwargs):
    from models_catalog.services.worker_liveness import worker_gone

    _beat_stop.set()
    try:
        worker_gone(name=sender.hostname)
    except Exception:  # the database may be what went away; the row then ages out
        pass
