"""Settings read once from ``TRAILMARK_*`` environment variables.

An invalid value raises :class:`SettingsError` with one line that names the variable, so the
command line can stop start-up with that line instead of a traceback.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import re
import secrets
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "AdPlatformUrls",
    "SecretKey",
    "Settings",
    "SettingsError",
    "SigningKey",
    "get_settings",
    "load_secret_keys_file",
    "load_signing_keys_file",
]

MIN_SIGNING_KEY_BYTES = 32
SECRET_KEY_BYTES = 32
"""AES-256: every key of ``TRAILMARK_SECRET_KEYS`` is exactly this long."""


class SettingsError(ValueError):
    """A setting is missing or malformed; the message is one line naming the variable."""


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    """Short identifier carried in tokens so verification picks the right secret."""
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class SecretKey:
    """A key of the ring that encrypts tenants' integration secrets at rest (``tenants.security.secrets``)."""

    key_id: str
    """Stored with each ciphertext, so decryption picks the key that encrypted it."""
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class AdPlatformUrls:
    """Base URLs of the ad platforms' APIs (``TRAILMARK_META_API_URL`` …), and the Google OAuth client."""

    meta: str = "https://graph.facebook.com/v26.0"
    google_ads: str = "https://googleads.googleapis.com/v26"
    google_token: str = "https://oauth2.googleapis.com/token"  # noqa: S105 - an endpoint, not a secret
    google_authorize: str = "https://accounts.google.com/o/oauth2/v2/auth"
    tiktok: str = "https://business-api.tiktok.com/open_api/v1.3"
    linkedin: str = "https://api.linkedin.com/rest"
    google_client_id: str | None = None
    google_client_secret: str | None = field(default=None, repr=False)
    google_developer_token: str | None = field(default=None, repr=False)
    """Optional since 2026-09; sent when configured."""

    @classmethod
    def from_env(cls, env: dict[str, str]) -> AdPlatformUrls:
        defaults = cls()
        return cls(
            meta=_http_url(env, "TRAILMARK_META_API_URL", defaults.meta),
            google_ads=_http_url(env, "TRAILMARK_GOOGLE_ADS_API_URL", defaults.google_ads),
            google_token=_http_url(env, "TRAILMARK_GOOGLE_OAUTH_TOKEN_URL", defaults.google_token),
            google_authorize=_http_url(env, "TRAILMARK_GOOGLE_OAUTH_AUTHORIZE_URL", defaults.google_authorize),
            tiktok=_http_url(env, "TRAILMARK_TIKTOK_API_URL", defaults.tiktok),
            linkedin=_http_url(env, "TRAILMARK_LINKEDIN_API_URL", defaults.linkedin),
            google_client_id=env.get("TRAILMARK_GOOGLE_CLIENT_ID", "").strip() or None,
            google_client_secret=env.get("TRAILMARK_GOOGLE_CLIENT_SECRET", "").strip() or None,
            google_developer_token=env.get("TRAILMARK_GOOGLE_DEVELOPER_TOKEN", "").strip() or None,
        )


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    """The app role: owns no table, subject to row-level security. None means the embedded default."""
    migration_database_url: str | None
    """The owner role used by ``trailmark migrate``; defaults to ``database_url``."""
    redis_url: str | None
    signing_keys: tuple[SigningKey, ...]
    """Newest first: new tokens are signed with the first; older ones still verify."""
    data_dir: Path
    host: str
    port: int
    database_pool_size: int
    public_url: str | None
    """Base URL browsers reach the API at (used in snippets and links); defaults to http://host:port."""
    log_json: bool
    log_level: int
    """Level of Trailmark's own log lines; libraries (Celery, uvicorn) add their info lines only at debug."""
    ingest_max_backlog: int
    """Collect answers 503 once this many batches wait in the ingest stream."""
    smtp_url: str | None
    """smtp://user:password@host:port (smtps:// for TLS, smtp+starttls:// to upgrade); None logs mail instead."""
    mail_from: str
    session_idle_minutes: int
    session_absolute_hours: int
    staff_session_idle_minutes: int
    """A dashboard session ends after this long without a request."""
    staff_session_absolute_hours: int
    """A dashboard session ends this long after its login, however busy."""
    scanner_grace_seconds: int
    """A tracked-link click this soon after the link was made is a mail scanner's: it identifies nobody."""
    ingest_claim_idle_ms: int
    """A batch unacknowledged this long was taken by an ingest worker presumed dead; another claims it."""
    trusted_proxies: tuple[str, ...]
    """Addresses/networks whose X-Forwarded-For is believed; nobody's by default."""
    report_statement_timeout_ms: int = 5000
    """A report query running longer is cancelled and its panel says it timed out."""
    secret_keys: tuple[SecretKey, ...] = ()
    """Newest first: secrets are encrypted with the first; older ones still decrypt (rotation = add a key)."""
    ad_platforms: AdPlatformUrls = field(default_factory=AdPlatformUrls)
    """Where conversions are sent: the platforms' own APIs unless configured (tests use local fakes)."""
    conversions_flush_seconds: float = 2.0
    """A destination's queued conversions are sent once a batch is full or the oldest has waited this long."""
    conversions_lease_seconds: float = 120.0
    """A claimed batch of conversions is its sender's this long (a send times out within a third of it): past
    it, the sender is presumed dead and the batch is sent again, with the same event ids."""
    metrics_token: str | None = field(default=None, repr=False)
    """Bearer token of ``GET /metrics`` (Prometheus); None leaves ``/metrics`` off (404)."""
    # --- the Celery broker (docs/scale.md, "Celery on RabbitMQ") ---
    broker_url: str | None = field(default=None, repr=False)
    """``TRAILMARK_BROKER_URL``: amqp(s):// for RabbitMQ quorum queues; None: Celery uses ``redis_url``."""

    @property
    def task_broker_url(self) -> str | None:
        """Where tasks are queued: ``TRAILMARK_BROKER_URL``, else the Redis URL (the embedded default's)."""
        return self.broker_url or self.redis_url

    # Sharded ingest (tenants/tracking/buffer.py, docs/scale.md).
    ingest_redis_url: str | None = field(default=None, repr=False)
    """The ingest buffer's Redis: ``redis://`` (one node) or ``redis-cluster://host:port,host:port`` (Redis
    Cluster); None means ``redis_url``."""
    ingest_shards: int = 1
    """Ingest streams collect spreads visitors over (one visitor, one shard); each is drained by one worker at once."""
    ingest_lease_ms: int = 10_000
    """An ingest worker's hold on a shard lapses this long after its last renewal (a dead worker's shards move on)."""

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def ingest_redis(self) -> str | None:
        """Where the ingest streams live: ``TRAILMARK_INGEST_REDIS_URL``, else ``TRAILMARK_REDIS_URL``."""
        return self.ingest_redis_url or self.redis_url

    @property
    def embedded(self) -> bool:
        """True when no external services are configured and ``trailmark run`` starts its own."""
        return self.database_url is None and self.redis_url is None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        database_url = _database_url(env, "TRAILMARK_DATABASE_URL")
        migration_url = _database_url(env, "TRAILMARK_MIGRATION_DATABASE_URL") or database_url
        redis_url = _redis_url(env)
        if (database_url is None) != (redis_url is None):
            missing = "TRAILMARK_REDIS_URL" if redis_url is None else "TRAILMARK_DATABASE_URL"
            raise SettingsError(
                f"{missing} is not set: set both TRAILMARK_DATABASE_URL and TRAILMARK_REDIS_URL, "
                "or neither for the embedded default"
            )
        data_dir = Path(env.get("TRAILMARK_DATA_DIR") or ".trailmark").expanduser().resolve()
        keys_text = env.get("TRAILMARK_SIGNING_KEYS", "").strip()
        signing_keys = parse_signing_keys(keys_text) if keys_text else ()
        if not signing_keys and database_url is not None:
            # Every API process and worker must share the keys, so they cannot be generated per machine.
            raise SettingsError("TRAILMARK_SIGNING_KEYS is required when TRAILMARK_DATABASE_URL is set")
        secret_keys_text = env.get("TRAILMARK_SECRET_KEYS", "").strip()
        secret_keys = parse_secret_keys(secret_keys_text) if secret_keys_text else ()
        if not secret_keys and database_url is not None:
            # Every process must decrypt what another encrypted, so the ring cannot be generated per machine.
            raise SettingsError("TRAILMARK_SECRET_KEYS is required when TRAILMARK_DATABASE_URL is set")
        public_url = env.get("TRAILMARK_PUBLIC_URL", "").strip() or None
        if public_url and urlsplit(public_url).scheme not in ("http", "https"):
            raise SettingsError(f"TRAILMARK_PUBLIC_URL must be an http(s) URL, got {public_url!r}")
        return cls(
            database_url=database_url,
            migration_database_url=migration_url,
            redis_url=redis_url,
            signing_keys=signing_keys,
            data_dir=data_dir,
            host=env.get("TRAILMARK_HOST", "127.0.0.1").strip() or "127.0.0.1",
            port=_int(env, "TRAILMARK_PORT", 8000, 1, 65535),
            database_pool_size=_int(env, "TRAILMARK_DATABASE_POOL_SIZE", 10, 1, 1000),
            public_url=public_url,
            log_json=_bool(env, "TRAILMARK_LOG_JSON", default=False),
            log_level=_log_level(env),
            ingest_max_backlog=_int(env, "TRAILMARK_INGEST_MAX_BACKLOG", 200_000, 1, 100_000_000),
            smtp_url=_smtp_url(env),
            mail_from=env.get("TRAILMARK_MAIL_FROM", "").strip() or "Trailmark <no-reply@localhost>",
            session_idle_minutes=_int(env, "TRAILMARK_SESSION_IDLE_MINUTES", 30, 1, 24 * 60),
            session_absolute_hours=_int(env, "TRAILMARK_SESSION_ABSOLUTE_HOURS", 8, 1, 24 * 30),
            staff_session_idle_minutes=_int(env, "TRAILMARK_STAFF_SESSION_IDLE_MINUTES", 60, 1, 24 * 60),
            staff_session_absolute_hours=_int(env, "TRAILMARK_STAFF_SESSION_ABSOLUTE_HOURS", 12, 1, 24 * 30),
            scanner_grace_seconds=_int(env, "TRAILMARK_SCANNER_GRACE_SECONDS", 10, 0, 3600),
            ingest_claim_idle_ms=_int(env, "TRAILMARK_INGEST_CLAIM_IDLE_MS", 30_000, 100, 86_400_000),
            trusted_proxies=_networks(env, "TRAILMARK_TRUSTED_PROXIES"),
            report_statement_timeout_ms=_int(env, "TRAILMARK_REPORT_STATEMENT_TIMEOUT_MS", 5000, 100, 600_000),
            secret_keys=secret_keys,
            ad_platforms=AdPlatformUrls.from_env(env),
            conversions_flush_seconds=_int(env, "TRAILMARK_CONVERSIONS_FLUSH_MS", 2000, 50, 600_000) / 1000,
            conversions_lease_seconds=_int(env, "TRAILMARK_CONVERSIONS_LEASE_MS", 120_000, 3000, 3_600_000) / 1000,
            metrics_token=_metrics_token(env),
            broker_url=_broker_url(env, redis_url),
            ingest_redis_url=_ingest_redis_url(env),
            ingest_shards=_int(env, "TRAILMARK_INGEST_SHARDS", 1, 1, 1024),
            ingest_lease_ms=_int(env, "TRAILMARK_INGEST_LEASE_MS", 10_000, 200, 3_600_000),
        )

    def with_signing_keys_from_data_dir(self) -> Settings:
        """Embedded default: keep generated signing keys in the data folder so tokens survive restarts."""
        if self.signing_keys:
            return self
        path = self.data_dir / "signing-keys"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
            path.write_text(f"k1:{secret}\n")
            path.chmod(0o600)
        return replace(self, signing_keys=load_signing_keys_file(path))

    def with_secret_keys_from_data_dir(self) -> Settings:
        """Embedded default: keep a generated secret key ring in the data folder, as the signing keys, so
        secrets stored in the embedded database still decrypt after a restart."""
        if self.secret_keys:
            return self
        path = self.data_dir / "secret-keys"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_KEY_BYTES)).decode().rstrip("=")
            path.write_text(f"s1:{secret}\n")
            path.chmod(0o600)
        return replace(self, secret_keys=load_secret_keys_file(path))


def load_secret_keys_file(path: Path) -> tuple[SecretKey, ...]:
    return parse_secret_keys(",".join(line.strip() for line in path.read_text().splitlines() if line.strip()))


def parse_secret_keys(text: str) -> tuple[SecretKey, ...]:
    """Parse ``kid:base64key,kid:base64key`` (newest first; each key 32 bytes)."""
    keys: list[SecretKey] = []
    for item in text.split(","):
        kid, sep, encoded = item.strip().partition(":")
        if not sep or not kid or not encoded:
            raise SettingsError("TRAILMARK_SECRET_KEYS must look like 'kid:base64key,kid2:base64key'")
        if not kid.isalnum() or len(kid) > 16:
            raise SettingsError(f"TRAILMARK_SECRET_KEYS key id {kid!r} must be 1-16 letters or digits")
        try:
            secret = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            raise SettingsError(f"TRAILMARK_SECRET_KEYS key {kid!r} is not valid base64") from None
        if len(secret) != SECRET_KEY_BYTES:
            raise SettingsError(
                f"TRAILMARK_SECRET_KEYS key {kid!r} is {len(secret)} bytes; it must be {SECRET_KEY_BYTES}"
            )
        if any(k.key_id == kid for k in keys):
            raise SettingsError(f"TRAILMARK_SECRET_KEYS lists key id {kid!r} twice")
        keys.append(SecretKey(kid, secret))
    return tuple(keys)


def load_signing_keys_file(path: Path) -> tuple[SigningKey, ...]:
    return parse_signing_keys(",".join(line.strip() for line in path.read_text().splitlines() if line.strip()))


def parse_signing_keys(text: str) -> tuple[SigningKey, ...]:
    """Parse ``kid:base64secret,kid:base64secret`` (newest first)."""
    keys: list[SigningKey] = []
    for item in text.split(","):
        kid, sep, encoded = item.strip().partition(":")
        if not sep or not kid or not encoded:
            raise SettingsError("TRAILMARK_SIGNING_KEYS must look like 'kid:base64secret,kid2:base64secret'")
        if not kid.isalnum() or len(kid) > 16:
            raise SettingsError(f"TRAILMARK_SIGNING_KEYS key id {kid!r} must be 1-16 letters or digits")
        try:
            secret = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            raise SettingsError(f"TRAILMARK_SIGNING_KEYS key {kid!r} is not valid base64") from None
        if len(secret) < MIN_SIGNING_KEY_BYTES:
            raise SettingsError(
                f"TRAILMARK_SIGNING_KEYS key {kid!r} is {len(secret)} bytes; use at least {MIN_SIGNING_KEY_BYTES}"
            )
        if any(k.key_id == kid for k in keys):
            raise SettingsError(f"TRAILMARK_SIGNING_KEYS lists key id {kid!r} twice")
        keys.append(SigningKey(kid, secret))
    return tuple(keys)


def _database_url(env: dict[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    scheme = urlsplit(value).scheme
    if scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        # One driver everywhere: psycopg 3.
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    raise SettingsError(f"{name} must be a postgresql:// URL, got scheme {scheme!r}")


def _redis_url(env: dict[str, str]) -> str | None:
    value = env.get("TRAILMARK_REDIS_URL", "").strip()
    if not value:
        return None
    scheme = urlsplit(value).scheme
    if scheme == "redis-cluster":
        # Celery cannot use Redis Cluster as a broker, and sessions keep several keys in one transaction.
        raise SettingsError(
            "TRAILMARK_REDIS_URL must name one Redis node; a redis-cluster:// URL belongs in TRAILMARK_INGEST_REDIS_URL"
        )
    if scheme not in ("redis", "rediss", "unix"):
        raise SettingsError(f"TRAILMARK_REDIS_URL must be a redis:// URL, got scheme {scheme!r}")
    return value


BROKER_SCHEMES = ("amqp", "amqps", "redis", "rediss")


def _broker_url(env: dict[str, str], redis_url: str | None) -> str | None:
    value = env.get("TRAILMARK_BROKER_URL", "").strip()
    if not value:
        return None
    scheme = urlsplit(value).scheme
    if scheme not in BROKER_SCHEMES or not urlsplit(value).hostname:  # the URL itself may hold a password
        raise SettingsError(f"TRAILMARK_BROKER_URL must be an amqp:// (RabbitMQ) or redis:// URL, got {scheme!r}")
    if redis_url is None:
        # Results, the ingest buffer, sessions and rate limits stay on Redis whatever carries the tasks.
        raise SettingsError("TRAILMARK_BROKER_URL needs TRAILMARK_REDIS_URL (and TRAILMARK_DATABASE_URL) too")
    return value


def _ingest_redis_url(env: dict[str, str]) -> str | None:
    value = env.get("TRAILMARK_INGEST_REDIS_URL", "").strip()
    if not value:
        return None
    scheme, _, rest = value.partition("://")
    if scheme == "redis-cluster":
        nodes = rest.rsplit("@", 1)[-1].split("/", 1)[0]
        if not all(_host_port(node) for node in nodes.split(",")):
            raise SettingsError("TRAILMARK_INGEST_REDIS_URL must look like redis-cluster://host:port,host:port")
    elif scheme not in ("redis", "rediss", "unix"):
        raise SettingsError(
            f"TRAILMARK_INGEST_REDIS_URL must be a redis:// or redis-cluster:// URL, got scheme {scheme!r}"
        )
    return value


def _host_port(node: str) -> bool:
    host, _, port = node.strip().rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def _http_url(env: dict[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name} must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _int(env: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer from {low} to {high}, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be an integer from {low} to {high}, got {raw!r}")
    return value


LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _log_level(env: dict[str, str]) -> int:
    raw = env.get("TRAILMARK_LOG_LEVEL", "").strip().lower()
    if not raw:
        return logging.INFO
    if raw not in LOG_LEVELS:
        raise SettingsError(f"TRAILMARK_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return LOG_LEVELS[raw]


def _smtp_url(env: dict[str, str]) -> str | None:
    value = env.get("TRAILMARK_SMTP_URL", "").strip()
    if not value:
        return None
    if urlsplit(value).scheme not in ("smtp", "smtps", "smtp+starttls") or not urlsplit(value).hostname:
        raise SettingsError(
            f"TRAILMARK_SMTP_URL must be smtp://host:port (or smtps://, smtp+starttls://), got {value!r}"
        )
    return value


MIN_METRICS_TOKEN_CHARS = 32
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
"""RFC 6750's b64token: what an ``Authorization: Bearer`` header can carry."""


def _metrics_token(env: dict[str, str]) -> str | None:
    value = env.get("TRAILMARK_METRICS_TOKEN", "").strip()
    if not value:
        return None
    # Sent by the scraper on every request, so it must be long enough not to be guessed.
    if len(value) < MIN_METRICS_TOKEN_CHARS or not _BEARER_TOKEN.fullmatch(value):
        raise SettingsError(
            f"TRAILMARK_METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_CHARS} letters, digits or -._~+/= "
            "(e.g. `openssl rand -hex 32`)"
        )
    return value


def _networks(env: dict[str, str], name: str) -> tuple[str, ...]:
    raw = [item.strip() for item in env.get(name, "").split(",") if item.strip()]
    for item in raw:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise SettingsError(
                f"{name} must be a comma-separated list of IP addresses or networks, got {item!r}"
            ) from None
    return tuple(raw)


def _bool(env: dict[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; the command line validates them before anything else runs."""
    return Settings.from_env().with_signing_keys_from_data_dir().with_secret_keys_from_data_dir()
