"""Suite-wide set-up: runtime state goes to a temp dir, never to ./var."""
import os
import tempfile

# Must happen before Django reads settings (pytest-django does that after conftest import).
os.environ.setdefault("MODELXREF_DATA_DIR", tempfile.mkdtemp(prefix="modelxref-test-"))
os.environ.pop("DATABASE_URL", None)  # the unit suite always runs on SQLite
os.environ.pop("REDIS_URL", None)
