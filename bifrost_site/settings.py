"""Django settings, read from the environment through ``bifrost_site.env``.

With nothing set the gateway runs in *embedded mode*: SQLite under ``BIFROST_DATA_DIR`` and the
host-local counter table shared by this host's processes. ``DATABASE_URL`` (PostgreSQL) and
``REDIS_URL`` switch on *production mode*. ``.env.example`` lists every variable.
"""

from __future__ import annotations

import os
import re
import secrets
from io import TextIOWrapper
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from bifrost_site.env import env_bool, env_choice, env_float, env_int, env_list, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("BIFROST_DATA_DIR", str(BASE_DIR / "var"))).resolve()


def private_file(path: Path) -> TextIOWrapper:
    """Create ``path`` readable by its owner only (0600) from the first byte, whatever the umask:
    ``write_text`` then ``chmod`` would leave it readable by others in between."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w")


def _secret_key() -> str:
    """DJANGO_SECRET_KEY, or a random key kept in DATA_DIR so embedded mode survives restarts."""
    configured = env_str("DJANGO_SECRET_KEY")
    if configured:
        if len(configured) < 32:
            raise ImproperlyConfigured("DJANGO_SECRET_KEY must be at least 32 characters long")
        return configured
    key_file = DATA_DIR / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    # Written whole to a private temporary file, then linked into place: a process starting at
    # the same moment either links first or reads the complete key of the one that did.
    draft = DATA_DIR / f".secret_key.{os.getpid()}"
    draft.unlink(missing_ok=True)
    try:
        with private_file(draft) as handle:
            handle.write(key)
        os.link(draft, key_file)
    except FileExistsError:
        key = key_file.read_text().strip()
    finally:
        draft.unlink(missing_ok=True)
    return key


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "governance.apps.GatewayAdminConfig",  # django.contrib.admin with the gateway's admin site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "governance",
    "proxy",
    "consent",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "bifrost_site.middleware.JsonErrorMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Who the audit trail names for configuration written while serving a request.
    "governance.audit.AuditActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "bifrost_site.urls"
WSGI_APPLICATION = "bifrost_site.wsgi.application"

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
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env_url("DATABASE_URL", ("postgres", "postgresql", "sqlite"))
if DATABASE_URL is None:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASE_URL = f"sqlite:///{DATA_DIR / 'bifrost.sqlite3'}"
_db = dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0))
_db["CONN_HEALTH_CHECKS"] = True
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite creates a missing database file with the umask's mode (usually world-readable), and
    # its -wal/-shm/-journal files copy the database file's mode. An empty file is a valid empty
    # database, so creating it here first, 0600, makes every later open (migrate included) use it.
    if _db["NAME"] and _db["NAME"] != ":memory:" and not str(_db["NAME"]).startswith("file:"):
        try:
            private_file(Path(_db["NAME"])).close()
        except FileExistsError:
            pass
        except OSError:
            pass  # e.g. a missing directory: SQLite reports it, naming the path, when it connects
    # WAL + immediate transactions: concurrent writers queue on the lock instead of failing
    # with "database is locked" halfway through a transaction.
    _db["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis / counters ------------------------------------------------------------------------
REDIS_URL = env_url("REDIS_URL", ("redis", "rediss", "unix"))
# Where budget and rate-limit counters live (rules in governance/metering/counters/__init__.py): "auto"
# (Redis when REDIS_URL is set, else the host-local table on SQLite, else the database rows),
# "redis" (fail closed without Redis), "local" (one host only) or "database".
GOVERNANCE_COUNTERS = env_choice("GOVERNANCE_COUNTERS", "auto", ("auto", "redis", "local", "database"))
if GOVERNANCE_COUNTERS == "redis" and REDIS_URL is None:
    raise ImproperlyConfigured("GOVERNANCE_COUNTERS=redis needs REDIS_URL")
GOVERNANCE_ENFORCE_VIRTUAL_KEYS = env_bool("GOVERNANCE_ENFORCE_VIRTUAL_KEYS", True)
# Output tokens reserved for a request that sets no max_tokens (worst-case budget reservation).
# A model without a price on a path that has a budget: "block" refuses it before the upstream call
# (400 model_unpriced naming the model); "allow" lets it through at $0, recorded priced=false.
GOVERNANCE_UNPRICED_MODELS = env_choice("GOVERNANCE_UNPRICED_MODELS", "block", ("block", "allow"))
GOVERNANCE_DEFAULT_MAX_TOKENS = env_int("GOVERNANCE_DEFAULT_MAX_TOKENS", 4096, minimum=1)
# A reservation whose process died is settled within this bound (``governance.metering.reaper``): at once on
# the same host (the dead process's lease file is unlocked), after this long from another host.
GOVERNANCE_LEASE_SECONDS = env_float("GOVERNANCE_LEASE_SECONDS", 30.0, minimum=1)
# Seconds a process caches a virtual key's configuration; changes also invalidate it at once.
GOVERNANCE_CONFIG_CACHE_SECONDS = env_float("GOVERNANCE_CONFIG_CACHE_SECONDS", 5.0, minimum=0)

# --- Proxy ----------------------------------------------------------------------------------
PROXY_DEFAULT_TIMEOUT_SECONDS = env_float("PROXY_DEFAULT_TIMEOUT_SECONDS", 60.0, minimum=0.1)
PROXY_CONNECT_TIMEOUT_SECONDS = env_float("PROXY_CONNECT_TIMEOUT_SECONDS", 5.0, minimum=0.1)
PROXY_MODELS_LIST_TIMEOUT_SECONDS = env_float("PROXY_MODELS_LIST_TIMEOUT_SECONDS", 3.0, minimum=0.1)
PROXY_POOL_MAXSIZE = env_int("PROXY_POOL_MAXSIZE", 64, minimum=1)
PROXY_MAX_RESPONSE_BYTES = env_int("PROXY_MAX_RESPONSE_BYTES", 256 * 1024 * 1024, minimum=1024)

# --- Request limits -------------------------------------------------------------------------
MAX_REQUEST_BODY_BYTES = env_int("BIFROST_MAX_BODY_BYTES", 10 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES
USAGE_RETENTION_DAYS = env_int("BIFROST_USAGE_RETENTION_DAYS", 400, minimum=1)
# Usage rows + settlements a gunicorn worker holds in memory while the database does not take
# them; past this, new ones go to a local journal in DATA_DIR, replayed once it is back (governance.metering.writer).
LEDGER_MEMORY_ROWS = env_int("BIFROST_LEDGER_MEMORY_ROWS", 10_000, minimum=1)
# Refusals of requests without a known virtual key (missing or unknown) written to the ledger,
# at most this many a second per process (proxy.accounting.refused); 0 records none. All are counted in /metrics.
# Request and response bodies stored for /api/logs content_search (governance.models.content):
# off by default; "true" for every request, or per virtual key (its log_content).
CONTENT_LOGGING = env_bool("BIFROST_CONTENT_LOGGING", False)
CONTENT_MAX_BYTES = env_int("BIFROST_CONTENT_MAX_BYTES", 32 * 1024, minimum=0, maximum=16 * 1024 * 1024)
CONTENT_RETENTION_DAYS = env_int("BIFROST_CONTENT_RETENTION_DAYS", 30, minimum=1)
LEDGER_ANONYMOUS_REFUSALS_PER_SECOND = env_int("BIFROST_LEDGER_ANONYMOUS_REFUSALS_PER_SECOND", 20, minimum=0)

# --- Metrics and tracing (telemetry/) -------------------------------------------------------
# /metrics is open unless this is set; then it asks for ``Authorization: Bearer <token>``.
METRICS_BEARER_TOKEN = env_str("METRICS_BEARER_TOKEN")
# Distinct values per metric label (provider, model, virtual key, team, customer, error type, MCP
# client and tool) a process reports; later ones are folded into "other". Also caps the series of
# each budget / rate-limit use-ratio family.
METRICS_MAX_LABEL_VALUES = env_int("METRICS_MAX_LABEL_VALUES", 500, minimum=1)
# OpenTelemetry spans are exported when OTEL_EXPORTER_OTLP_ENDPOINT is set (read by the SDK, with
# the other OTEL_* variables, in telemetry/tracing.py).

# --- Secrets at rest ------------------------------------------------------------------------
# Fernet key (urlsafe base64, 32 bytes) for provider key values; derived from SECRET_KEY when
# unset. Rotating SECRET_KEY without setting this makes stored provider keys unreadable.
BIFROST_ENCRYPTION_KEY = env_str("BIFROST_ENCRYPTION_KEY")

# --- Security -------------------------------------------------------------------------------
BIFROST_TLS = env_bool("BIFROST_TLS", False)
# The gateway's public URL (e.g. https://gateway.example.com), used in links it gives out such as
# /mcp's WWW-Authenticate; blank = the request's own scheme and host.
BIFROST_PUBLIC_URL = env_url("BIFROST_PUBLIC_URL", ("http", "https")) or ""
MCP_TOOLS_REFRESH_SECONDS = env_float("MCP_TOOLS_REFRESH_SECONDS", 60.0, minimum=1.0)
MCP_DISCOVERY_SECONDS = env_float("MCP_DISCOVERY_SECONDS", 3.0, minimum=0.1)
SESSION_COOKIE_SECURE = BIFROST_TLS
CSRF_COOKIE_SECURE = BIFROST_TLS
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if BIFROST_TLS:
    SECURE_HSTS_SECONDS = env_int("BIFROST_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve straight from the app/static folders: no collectstatic step needed to run.
WHITENOISE_USE_FINDERS = True

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "bifrost"}}
if REDIS_URL:
    # Shared cache so django-ratelimit counts attempts across all workers and hosts.
    CACHES["default"] = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
RATELIMIT_USE_CACHE = "default"

# --- Consent flow ---------------------------------------------------------------------------
_RATE_RE = re.compile(r"^[1-9][0-9]*/([1-9][0-9]*)?[smhd]$")


def _rate(name: str, default: str) -> str:
    """A django-ratelimit rate such as ``10/15m`` (count / optional multiplier + s, m, h or d)."""
    value = env_str(name, default)
    if not _RATE_RE.match(value):
        raise ImproperlyConfigured(f"{name} must look like 10/m or 10/15m (count/period, period in s, m, h or d)")
    return value


# Brute-force limits of the consent Virtual Key form: attempts per flow and per client address.
CONSENT_VK_RATE_PER_FLOW = _rate("CONSENT_VK_RATE_PER_FLOW", "10/15m")
CONSENT_VK_RATE_PER_IP = _rate("CONSENT_VK_RATE_PER_IP", "30/10m")
# CSRF refusals in the project's shapes (JSON on API paths, a plain page elsewhere).
CSRF_FAILURE_VIEW = "consent.views.csrf_failure"

# --- Management API: HTTP Basic --------------------------------------------------------------
# Seconds a process remembers a verified username+password (as an HMAC digest, with the user's
# password hash, rechecked against the user row on every use); 0 hashes the password every time.
API_BASIC_AUTH_CACHE_SECONDS = env_int("API_BASIC_AUTH_CACHE_SECONDS", 5, minimum=0, maximum=60)
# Failed Basic attempts allowed per username and per client address before 429.
API_BASIC_AUTH_FAILURES_PER_USER = _rate("API_BASIC_AUTH_FAILURES_PER_USER", "10/15m")
API_BASIC_AUTH_FAILURES_PER_IP = _rate("API_BASIC_AUTH_FAILURES_PER_IP", "30/15m")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "governance.api.authentication.AdminTokenAuthentication",
        "governance.api.authentication.StaffBasicAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["governance.api.permissions.StaffModelPermissions"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "bifrost_site.exceptions.api_exception_handler",
    # OPTIONS self-description is not part of the API (and crashes on viewsets without serializer_class).
    "DEFAULT_METADATA_CLASS": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Bifrost-compatible gateway management API",
    "DESCRIPTION": "Virtual keys, teams, customers, budgets, rate limits, providers and provider keys.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAdminUser"],
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "governance.api.docs.postprocess_schema",  # error responses on every operation
    ],
}

LOG_LEVEL = env_choice("BIFROST_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "bifrost_site.logging.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
    },
}
