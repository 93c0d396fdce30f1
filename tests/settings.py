"""Settings for the test suite: config.settings with a throw-away data dir and no internet.

pytest-django imports settings before any conftest runs, so the environment
is prepared here.
"""
import os
import tempfile

os.environ["MODELXREF_DATA_DIR"] = os.environ.get("MODELXREF_TEST_DATA_DIR") or tempfile.mkdtemp(prefix="modelxref-test-")
os.environ.pop("DATABASE_URL", None)  # the unit suite always runs on SQLite
os.environ.pop("REDIS_URL", None)
# Civitai is off unless a test turns it on against the stand-in in tests/fakes.
os.environ["CIVITAI_ENABLED"] = "false"
os.environ["CIVITAI_API_BASE"] = "http://127.0.0.1:9/api/v1"
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"

from config.settings import *  # noqa: E402,F401,F403

# Creating users dominates API test time with the real hasher.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Each test has its own catalog: filter suggestions are computed afresh (a test of the reuse sets it).
FILTER_CHOICES_SECONDS = 0
