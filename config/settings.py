"""ModelXRef settings: everything comes from the environment, with safe defaults.

With no environment at all the app runs on one machine: SQLite and a
file-based Celery broker, both under MODELXREF_DATA_DIR (./var). Point
DATABASE_URL at PostgreSQL and REDIS_URL at Redis to scale out.
"""
from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.data_dir import make_private_dirs, make_private_file

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        return float(value) if value.strip() else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from None


def env_paths(name: str) -> list[Path]:
    return [Path(p).expanduser().resolve() for p in os.environ.get(name, "").split(os.pathsep) if p.strip()]


def env_proxy_header(name: str) -> tuple[str, str] | None:
    """A header name as a proxy sends it (X-Forwarded-Proto) -> Django's ("HTTP_X_FORWARDED_PROTO", "https")."""
    value = env_str(name).strip()
    if not value:
        return None
    meta = value.upper().replace("-", "_")
    return (meta if meta.startswith("HTTP_") else f"HTTP_{meta}", "https")


DEBUG = env_bool("DEBUG", default=False)
# `make run` and tests must work with no setup, so MODELXREF_DEV defaults to true and a missing
# key falls back to a fixed dev key. A deployment says MODELXREF_DEV=false (docker-compose.yml
# does); then a missing SECRET_KEY refuses to start.
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if DEBUG or env_bool("MODELXREF_DEV", default=True):
        SECRET_KEY = "modelxref-dev-only-insecure-key"
    else:
        raise ImproperlyConfigured("SECRET_KEY is required when MODELXREF_DEV=false (a deployment)")

ALLOWED_HOSTS = [h for h in env_str("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h]

# HTTPS, usually terminated by a proxy in front of gunicorn. Off by default so that
# `make run` works on plain http://127.0.0.1; README shows the production set, which
# `manage.py check --deploy` accepts without a warning.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", default=False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=False)
# Trust the proxy's word that the client used HTTPS. Only where the proxy always sets
# (or strips) this header: otherwise any client could claim HTTPS.
SECURE_PROXY_SSL_HEADER = env_proxy_header("SECURE_PROXY_SSL_HEADER")

# Every piece of runtime state lives under the data dir.
DATA_DIR = Path(env_str("MODELXREF_DATA_DIR", str(BASE_DIR / "var"))).expanduser().resolve()
UPLOAD_DIR = DATA_DIR / "uploads"
PREVIEW_DIR = DATA_DIR / "previews"  # re-encoded thumbnails only; served by a login-checked view
HASH_CACHE_PATH = DATA_DIR / "hash-cache.sqlite3"
MODEL_ROOTS = env_paths("MODELXREF_MODEL_ROOTS")
MAX_UPLOAD_BYTES = env_int("MAX_UPLOAD_BYTES", 64 * 1024**3)
# Where duplicate actions move quarantined files (services/file_actions.py): empty, the data dir's
# quarantine/ folder; an absolute folder; or a hidden folder name such as ".modelxref-quarantine",
# made inside each model root, so that moving a file there is a rename on its own filesystem.
QUARANTINE_DIR = env_str("MODELXREF_QUARANTINE_DIR").strip()
if QUARANTINE_DIR and not Path(QUARANTINE_DIR).is_absolute() and (
        not QUARANTINE_DIR.startswith(".") or "/" in QUARANTINE_DIR or QUARANTINE_DIR in (".", "..")):
    raise ImproperlyConfigured("MODELXREF_QUARANTINE_DIR must be an absolute folder or one hidden folder name "
                               f"such as .modelxref-quarantine (made inside each model root), got {QUARANTINE_DIR!r}")
if QUARANTINE_DIR and Path(QUARANTINE_DIR).is_absolute():
    QUARANTINE_DIR = str(Path(QUARANTINE_DIR).expanduser().resolve())

CIVITAI_API_BASE = env_str("CIVITAI_API_BASE", "https://civitai.com/api/v1")
# Every Civitai API asked, in order: a later one only for what the earlier ones miss (since 2026-04
# civitai.com serves SFW content only, civitai.red everything). Comma-separated. Unset: CIVITAI_API_BASE,
# plus https://civitai.red/api/v1 when that is the real civitai.com (a stand-in or proxy stays alone).
CIVITAI_API_BASES = [b.strip() for b in env_str("CIVITAI_API_BASES").split(",") if b.strip()]
CIVITAI_API_KEY = env_str("CIVITAI_API_KEY")
# Off: identify from the local catalog only (offline use; the unit tests).
CIVITAI_ENABLED = env_bool("CIVITAI_ENABLED", default=True)
# Preview images (issue #12): only these hosts are fetched from, redirects included, so a version's
# images[] cannot make the worker fetch from anywhere else (an internal address, another site).
PREVIEW_IMAGE_HOSTS = [h.strip().lower() for h in env_str("MODELXREF_PREVIEW_IMAGE_HOSTS", "image.civitai.com").split(",")
                       if h.strip()]
PREVIEWS_PER_VERSION = env_int("MODELXREF_PREVIEWS_PER_VERSION", 3)
# Civitai's width=450 JPEGs are ~100 KB; 10 MB leaves room for originals and refuses anything absurd.
PREVIEW_MAX_BYTES = env_int("MODELXREF_PREVIEW_MAX_BYTES", 10 * 1024 * 1024)
PREVIEW_THUMB_PX = env_int("MODELXREF_PREVIEW_THUMB_PX", 512)
HF_ENDPOINT = env_str("HF_ENDPOINT", "https://huggingface.co")
HF_TOKEN = env_str("HF_TOKEN")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "models_catalog",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "models_catalog.middleware.ServiceUnavailableMiddleware",  # Redis down: a 503 page, not a 500
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
    {   # only the partials drawn once per row of a long list (models_catalog/jinja_env.py)
        "BACKEND": "django.template.backends.jinja2.Jinja2",
        "APP_DIRS": True,
        "OPTIONS": {"environment": "models_catalog.jinja_env.environment"},
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
        conn_max_age=60,
    )
}
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # Every query here is one owner's index ranges, a few ms, which two server features made slower:
    # - parallel plans run their subplans once per worker process (under the 50-client load test the
    #   duplicates query did its seven GROUP BYs twice). DATABASE_PARALLEL_WORKERS gives them back to a
    #   deployment with cores to spare;
    # - JIT compiles any plan whose estimate passes jit_above_cost: the duplicates query's subplans did,
    #   and spent 73 ms compiling for 30 ms of work (docs/BENCHMARKS.md, "Scale").
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "options", f"-c max_parallel_workers_per_gather={env_int('DATABASE_PARALLEL_WORKERS', 0)} -c jit=off")
    # Planning, not running, was most of PostgreSQL's work here: a lookup's five queries run in ~0.3 ms each
    # and were planned every time (10 ms of backend CPU a lookup, 5 ms with prepared statements). Server-side
    # binding lets psycopg prepare a query its connection has run DATABASE_PREPARE_THRESHOLD times; 0 turns
    # it off (Django's default: client-side binding), as a pooler in transaction mode (pgbouncer) needs.
    prepare_threshold = env_int("DATABASE_PREPARE_THRESHOLD", 2)
    if prepare_threshold > 0:
        DATABASES["default"]["OPTIONS"].update(server_side_binding=True, prepare_threshold=prepare_threshold)
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Web and worker write the same SQLite file: wait for locks instead of failing.
    # WAL: readers (pages, `register --wait`) never block the workers' writes, and a commit is an
    # append without fsync instead of a rollback journal with several (~5 ms a commit here, about
    # four commits a file: hashing + analysis of a small file went from 37 to 11 ms).
    # synchronous=NORMAL in WAL keeps the file consistent; a power cut can lose the last commits,
    # which the hash cache and a re-register redo.
    DATABASES["default"].setdefault("OPTIONS", {}).update({
        "timeout": 30, "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
    })
    DATABASES["default"]["CONN_MAX_AGE"] = 0

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"

# Uploads stream to a temp file on disk, never whole into memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = str(DATA_DIR / "tmp")
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# --- Celery -----------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
BROKER_DIR = DATA_DIR / "broker"
FILESYSTEM_BROKER_POLL_SECONDS = 0.1
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    # A message a worker took but did not ack comes back after this. The reaper (every minute, see
    # services/reaper.py) requeues a dead worker's rows long before; this only bounds messages that
    # were taken and never started. A redelivery while the first worker still runs is left alone by
    # the stage (live heartbeat), so this need not exceed the longest hash.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 30 * 60}
else:
    # No server needed: kombu's filesystem transport, one folder of message files.
    # kombu's filesystem transport, with messages written whole (config/filesystem_broker.py); a host
    # part keeps kombu from warning on every connect.
    CELERY_BROKER_URL = "modelxref-filesystem://localhost//"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        # An idle or full consumer sleeps this long before it looks at the folder again; kombu's
        # 1 s default made every task wait ~1 s after the previous one (~1 file/s). A look is one
        # listdir of the queue folder: an idle worker polling ten times a second uses ~0.3% of a core.
        "polling_interval": FILESYSTEM_BROKER_POLL_SECONDS,
    }
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A 100 GB file at ~1 GB/s is ~2 minutes; slow disks can be 10x slower.
CELERY_TASK_SOFT_TIME_LIMIT = 4 * 3600
CELERY_TASK_TIME_LIMIT = 4 * 3600 + 300
CELERY_TASK_DEFAULT_QUEUE = "hashing"
CELERY_TASK_ROUTES = {
    "workers.tasks.hash_local_file": {"queue": "hashing"},
    "workers.tasks.hash_local_files": {"queue": "hashing"},
    "workers.tasks.identify_local_file": {"queue": "lookups"},
    "workers.tasks.civitai_lookup_batch": {"queue": "lookups"},
    "workers.tasks.civitai_refresh_stale": {"queue": "lookups"},
    "workers.tasks.local_files_reap": {"queue": "lookups"},  # a stuck hashing pool must not block it
    "workers.tasks.hf_index_repo": {"queue": "lookups"},
    "workers.tasks.download_previews": {"queue": "lookups"},  # network, not disks
    "workers.tasks.hf_verify_local_dir": {"queue": "hashing"},
    "workers.tasks.run_file_action": {"queue": "hashing"},  # duplicate actions re-hash and move files: near the disks
    "workers.tasks.convert_checkpoint_job": {"queue": "hashing"},  # disk-bound: near the files, like hashing
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}


def ensure_data_dirs() -> None:
    # Private: the data dir holds the database, uploads and broker messages (config/data_dir.py).
    make_private_dirs(DATA_DIR, UPLOAD_DIR, STATIC_ROOT, Path(FILE_UPLOAD_TEMP_DIR), DATA_DIR / "cache", BROKER_DIR, PREVIEW_DIR,
                      BROKER_DIR / "queue", BROKER_DIR / "control", BROKER_DIR / "processed")
    if DATABASES["default"]["ENGINE"].endswith("sqlite3") and DATABASES["default"]["NAME"] not in ("", ":memory:"):
        make_private_file(Path(DATABASES["default"]["NAME"]))


ensure_data_dirs()

# Serve static files straight from STATICFILES_DIRS: no collectstatic step for `make run`.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- Identification ---------------------------------------------------------
# Civitai caches by-hash answers (misses included) for an hour: asking sooner gains nothing.
CIVITAI_MISS_CACHE_SECONDS = env_int("CIVITAI_MISS_CACHE_SECONDS", 24 * 3600)
CIVITAI_HIT_REFRESH_SECONDS = env_int("CIVITAI_HIT_REFRESH_SECONDS", 7 * 24 * 3600)
CIVITAI_REQUESTS_PER_SECOND = float(env_str("CIVITAI_REQUESTS_PER_SECOND", "2"))
CIVITAI_TIMEOUT_SECONDS = float(env_str("CIVITAI_TIMEOUT_SECONDS", "30"))
# How often the hourly refresh asks again for the versions of each model a user holds ("v2.0 available"):
# GET /models?ids= costs one request per 100 models.
CIVITAI_UPDATES_CHECK_SECONDS = env_int("CIVITAI_UPDATES_CHECK_SECONDS", 6 * 3600)

# --- Nothing stuck (services/heartbeat.py, services/reaper.py) ----------------------------------------
# How soon a dead worker's rows are queued again, and a row the broker never took is sent. These are the
# product's values; only the end-to-end fault tests (tests/e2e/test_worker_faults.py) shrink them to
# seconds so that a killed worker is noticed within a test.
HEARTBEAT_SECONDS = env_float("MODELXREF_HEARTBEAT_SECONDS", 30.0)
STALLED_AFTER_SECONDS = env_float("MODELXREF_STALLED_AFTER_SECONDS", 3 * HEARTBEAT_SECONDS)
REAP_EVERY_SECONDS = env_float("MODELXREF_REAP_EVERY_SECONDS", 60.0)
UNSENT_AFTER_SECONDS = env_float("MODELXREF_UNSENT_AFTER_SECONDS", 30.0)
if not 0 < 2 * HEARTBEAT_SECONDS <= STALLED_AFTER_SECONDS:
    # A live worker beats every HEARTBEAT_SECONDS: a shorter bound would requeue files that are fine.
    raise ImproperlyConfigured("MODELXREF_STALLED_AFTER_SECONDS must be at least twice MODELXREF_HEARTBEAT_SECONDS "
                               f"(got {STALLED_AFTER_SECONDS} and {HEARTBEAT_SECONDS})")
if REAP_EVERY_SECONDS <= 0 or UNSENT_AFTER_SECONDS < 0:
    raise ImproperlyConfigured("MODELXREF_REAP_EVERY_SECONDS must be positive, MODELXREF_UNSENT_AFTER_SECONDS not negative")

CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "civitai-refresh-stale": {"task": "workers.tasks.civitai_refresh_stale", "schedule": 3600.0},
    # Nothing stuck: a dead worker's rows are queued again within about two and a half minutes
    # (STALLED_AFTER_SECONDS, then the next run).
    "local-files-reap": {"task": "workers.tasks.local_files_reap", "schedule": REAP_EVERY_SECONDS},
}

# --- REST API -----------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "models_catalog.authentication.ApiTokenAuthentication",  # scripts: "Authorization: Token <key>" (stored hashed)
        "rest_framework.authentication.SessionAuthentication",  # the browser (CSRF enforced)
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.CursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_CLASSES": ["models_catalog.throttling.UserRateThrottle"],  # fails open when Redis is down
    "DEFAULT_THROTTLE_RATES": {"user": env_str("API_THROTTLE_USER", "10000/hour"), "lookup": env_str("API_THROTTLE_LOOKUP", "600/hour")},
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ModelXRef API",
    "DESCRIPTION": "Hashes, identification, safety verdicts and duplicates of AI model files.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Throttle counters and other small shared state: Redis when there is one, else a folder.
if REDIS_URL:
    # Short timeouts: a Redis that stopped answering must not hold every API request (the
    # throttles then fail open, models_catalog/throttling.py).
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2}}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(DATA_DIR / "cache")}}

# How long a process reuses the My files filter suggestions (types, base models of the whole catalog).
FILTER_CHOICES_SECONDS = env_float("MODELXREF_FILTER_CHOICES_SECONDS", 60.0)
# How long one library's duplicate groups stay cached (models_catalog/library_revision.py: any change to
# the files, hashes, matches or model names makes a new entry at once; this only bounds what a write the
# revision missed could leave behind). 0: computed on every request.
DUPLICATES_CACHE_SECONDS = env_int("MODELXREF_DUPLICATES_CACHE_SECONDS", 300)

# --- REST API (api helper) ----------------------------------------------------
# One error format for every API error: {"error": {"code", "message", "detail"}}.
REST_FRAMEWORK["EXCEPTION_HANDLER"] = "models_catalog.api_errors.api_exception_handler"
# `?format=` is a file filter in the API, not DRF's renderer switch.
REST_FRAMEWORK["URL_FORMAT_OVERRIDE"] = None
# Password guessing against POST /api/v1/auth/token/ (per client IP).
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["auth"] = env_str("API_THROTTLE_AUTH", "30/minute")
# Operation ids and tags without the version prefix: files_list, lookup_get, ...
SPECTACULAR_SETTINGS["SCHEMA_PATH_PREFIX"] = r"/api/v1"
