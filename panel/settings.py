"""Hako panel settings: everything comes from the environment, strictly parsed.

HAKO_DATABASE_URL   postgres://user@host:5432/db (fleets, tests) or sqlite:///path (embedded)
HAKO_BROKER_URL     redis://127.0.0.1:6379/0
HAKO_SECRET_KEY     Django's secret key; a random one is kept in HAKO_DATA when unset
HAKO_DATA           where the embedded default keeps its files (/var/lib/hako)
HAKO_DEBUG          "1" for development only
HAKO_ALLOWED_HOSTS  comma-separated host names
HAKO_CSRF_TRUSTED_ORIGINS  extra origins (https://panel.example.com) for forms and the console
HAKO_CONSOLE_IDLE_TIMEOUT, HAKO_CONSOLE_MAX_PER_VE, HAKO_CONSOLE_MAX_PER_USER,
HAKO_CONSOLE_TICKET_TTL  the VE console's limits (see the end of this file)
HAKO_EMAIL_BACKEND  console (default), smtp, locmem or dummy
HAKO_EMAIL_HOST, HAKO_EMAIL_PORT, HAKO_EMAIL_USER, HAKO_EMAIL_PASSWORD, HAKO_EMAIL_TLS (0/1)
HAKO_EMAIL_FROM     sender of the panel's mail (hako@localhost)
"""
from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw not in ("0", "1", "true", "false"):
        raise ImproperlyConfigured(f"{name} must be 0/1/true/false, got {raw!r}")
    return raw in ("1", "true")


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None


HAKO_DATA = Path(os.environ.get("HAKO_DATA", "/var/lib/hako"))


def _secret_key() -> str:
    key = os.environ.get("HAKO_SECRET_KEY")
    if key:
        return key
    # The embedded default keeps a random key next to its database.
    path = HAKO_DATA / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    try:
        HAKO_DATA.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(50)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        return key
    except FileExistsError:
        return path.read_text().strip()
    except OSError:
        return "insecure-" + secrets.token_urlsafe(40)  # read-only checkouts (static checks)


SECRET_KEY = _secret_key()
DEBUG = env_bool("HAKO_DEBUG")
ALLOWED_HOSTS = [h for h in os.environ.get("HAKO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "panel",
]

# Django REST framework serves the APIs (panel/api/); each API sets its own authentication,
# permissions and problem+json exception handler, so nothing global beyond the schema class.
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Hako billing API",
    "DESCRIPTION": "The API billing systems (WHMCS, Blesta, ...) drive Hako with: create, suspend, "
                   "unsuspend, terminate and change plan. Bearer tokens; Idempotency-Key on every "
                   "mutating call; errors are RFC 9457 problem+json.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc from drf-spectacular-sidecar, served by the app: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before sessions and authentication: sign-ins are audited with the client address too.
    "panel.middleware.ClientAddressMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "panel.urls"
TEMPLATES = [{
    # Hot list partials only (panel/jinja2/): see panel/jinja2_env.py.
    "BACKEND": "django.template.backends.jinja2.Jinja2",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"environment": "panel.jinja2_env.environment"},
}, {
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [BASE_DIR / "templates"],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
        "django.template.context_processors.i18n",
        "panel.views.context.panel",
    ]},
}]
WSGI_APPLICATION = "panel.wsgi.application"
# The ASGI app (uvicorn in make run and compose) serves the same HTTP views plus the VE
# console's WebSocket (panel/asgi.py).
ASGI_APPLICATION = "panel.asgi.application"
# Origins besides the allowed hosts that may open a console WebSocket and post forms
# (a TLS proxy's https://panel.example.com), comma-separated.
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("HAKO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "panel:ve-list"
LOGOUT_REDIRECT_URL = "login"

_db_url = os.environ.get("HAKO_DATABASE_URL", f"sqlite:///{HAKO_DATA / 'panel.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(_db_url, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default has several writers (web, panel worker, beat): WAL lets readers
    # run beside a writer, IMMEDIATE takes the write lock at BEGIN so that two writers
    # queue on the busy timeout instead of failing with "database is locked" mid-transaction.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("ja", "日本語")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Static files are served by whitenoise straight from the vendored tree (WHITENOISE_USE_FINDERS);
# a deployment that runs collectstatic sets HAKO_STATIC_ROOT.
STATIC_ROOT = os.environ.get("HAKO_STATIC_ROOT") or None
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").exists() else []
# WhiteNoise serves the vendored assets (static/, pinned in static/vendor/VERSIONS) straight
# from the source tree, so no collectstatic step is needed on a node or in the embedded default.
WHITENOISE_USE_FINDERS = True

# --- E-mail (quota decisions, later notifications) ---------------------------------------
_EMAIL_BACKENDS = {
    "console": "django.core.mail.backends.console.EmailBackend",
    "smtp": "django.core.mail.backends.smtp.EmailBackend",
    "locmem": "django.core.mail.backends.locmem.EmailBackend",
    "dummy": "django.core.mail.backends.dummy.EmailBackend",
}
_email_backend = os.environ.get("HAKO_EMAIL_BACKEND", "console") or "console"
if _email_backend not in _EMAIL_BACKENDS:
    raise ImproperlyConfigured(f"HAKO_EMAIL_BACKEND must be one of {', '.join(_EMAIL_BACKENDS)}, "
                               f"got {_email_backend!r}")
EMAIL_BACKEND = _EMAIL_BACKENDS[_email_backend]
EMAIL_HOST = os.environ.get("HAKO_EMAIL_HOST", "localhost")
try:
    EMAIL_PORT = int(os.environ.get("HAKO_EMAIL_PORT", "25"))
except ValueError:
    raise ImproperlyConfigured("HAKO_EMAIL_PORT must be a port number") from None
EMAIL_HOST_USER = os.environ.get("HAKO_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("HAKO_EMAIL_PASSWORD", "")
EMAIL_USE_TLS = env_bool("HAKO_EMAIL_TLS")
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = os.environ.get("HAKO_EMAIL_FROM", "hako@localhost")

# --- Celery (panel side) --------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("HAKO_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "panel"
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}

# --- Hako ------------------------------------------------------------------------------
# A node that has not sent a heartbeat for this long is "lost" and its jobs are failed.
HAKO_NODE_LOST_AFTER = env_float("HAKO_NODE_LOST_AFTER", 15.0)
HAKO_REAPER_INTERVAL = env_float("HAKO_REAPER_INTERVAL", 5.0)
# A pending job no node picked up by its message's expiry is failed.
HAKO_JOB_TTL = env_float("HAKO_JOB_TTL", 120.0)
# First host id of the fleet-wide pool of VE id ranges; must match root's /etc/subuid range.
HAKO_ID_BASE = int(os.environ.get("HAKO_ID_BASE", "1000000"))
HAKO_ID_RANGES = int(os.environ.get("HAKO_ID_RANGES", "15000"))
# The first VEID handed out when none is chosen (OpenVZ starts at 101).
HAKO_FIRST_VEID = int(os.environ.get("HAKO_FIRST_VEID", "101"))
# Webhook endpoints may be on loopback, private, link-local... addresses (a receiver on the
# panel's own LAN, tests). Off: a billing token must not turn the panel worker into a
# proxy into the provider's internal network or its cloud metadata service (SSRF).
HAKO_WEBHOOK_ALLOW_PRIVATE = env_bool("HAKO_WEBHOOK_ALLOW_PRIVATE", False)
# Reverse proxies (addresses or networks, comma-separated) whose X-Forwarded-For is believed
# for the client address of audit records; empty: the header is ignored (anyone can send it).
HAKO_TRUSTED_PROXIES = tuple(p.strip() for p in os.environ.get("HAKO_TRUSTED_PROXIES", "").split(",") if p.strip())
try:
    for _proxy in HAKO_TRUSTED_PROXIES:
        ipaddress.ip_network(_proxy, strict=False)
except ValueError:
    raise ImproperlyConfigured(f"HAKO_TRUSTED_PROXIES: {_proxy!r} is not an address or network") from None

CELERY_BEAT_SCHEDULE = {
    "reap-lost-nodes-and-expired-jobs": {
        "task": "hako.panel.reap",
        "schedule": HAKO_REAPER_INTERVAL,
    },
    # Suspended VEs that run anyway (a stop that met a busy VE, onboot after a host
    # reboot) are stopped again.
    "enforce-suspensions": {
        "task": "hako.panel.enforce_suspensions",
        "schedule": env_float("HAKO_SUSPENSION_INTERVAL", 30.0),
    },
    # Migrations whose orchestrator died (panel worker killed) are resumed or rolled back.
    "migrations-resume": {
        "task": "hako.panel.migrations_resume",
        "schedule": env_float("HAKO_MIGRATION_RESUME_INTERVAL", 30.0),
    },
    # Webhook events and retries whose task message was lost are queued again.
    "webhooks-sweep": {
        "task": "hako.panel.webhooks_sweep",
        "schedule": env_float("HAKO_WEBHOOK_SWEEP_INTERVAL", 60.0),
    },
    # Closed hours become usage records (a repeat writes nothing; a missed run catches up).
    "usage-rollup": {
        "task": "hako.panel.usage_rollup",
        "schedule": env_float("HAKO_USAGE_ROLLUP_INTERVAL", 300.0),
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("HAKO_LOG_LEVEL", "WARNING")},
}

# --- VE console (issue 7; panel/services/console.py) ------------------------------------
def _env_int(name: str, default: int, lo: int, hi: int) -> int:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise ImproperlyConfigured(f"{name} must be an integer in [{lo}, {hi}], got {raw!r}")
    return int(raw)


# A console with no keystroke and no output for this long is closed.
HAKO_CONSOLE_IDLE_TIMEOUT = _env_int("HAKO_CONSOLE_IDLE_TIMEOUT", 900, 1, 86400)
# Open consoles per VE and per user at a time.
HAKO_CONSOLE_MAX_PER_VE = _env_int("HAKO_CONSOLE_MAX_PER_VE", 4, 1, 100)
HAKO_CONSOLE_MAX_PER_USER = _env_int("HAKO_CONSOLE_MAX_PER_USER", 8, 1, 100)
# Seconds a console ticket (minted by the VE page, consumed by the WebSocket handshake) lives.
HAKO_CONSOLE_TICKET_TTL = _env_int("HAKO_CONSOLE_TICKET_TTL", 30, 1, 300)
