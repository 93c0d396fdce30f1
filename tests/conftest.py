"""Suite-wide fixtures. Settings for the suite live in tests/settings.py (they must load before Django)."""
import pytest

from config.celery import app as celery_app


@pytest.fixture
def eager_celery():
    """Tasks run inline in whichever thread queues them; on_commit callbacks still decide when."""
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager = False
