"""``trailmark``: run the whole system, or one part of it.

``run`` with no database or Redis URL starts the embedded default (PostgreSQL and Redis in the data
folder), migrates, creates a demo tenant on first run, then supervises the API, one worker and beat
until Ctrl-C or SIGTERM, and stops everything it started.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import FrameType
from uuid import UUID

from tenants.settings import Settings, SettingsError, get_settings

__all__ = ["main"]

QUEUES = "ingest,identity,conversions,default"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except SettingsError as error:
        print(f"trailmark: invalid setting: {error}", file=sys.stderr)
        return 2
    if args.command is None:
        parser.print_help()
        return 2
    if args.command != "run":
        settings = _beside_run(settings)
    try:
        return int(args.handler(settings, args) or 0)
    except SettingsError as error:
        print(f"trailmark: invalid setting: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trailmark", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="API + worker + beat (embedded PostgreSQL/Redis when no URLs are set)")
    run.add_argument(
        "--verbose", action="store_true", help="log every task, beat tick and request (TRAILMARK_LOG_LEVEL=debug)"
    )
    run.set_defaults(handler=_run)
    api = commands.add_parser("api", help="serve the HTTP API")
    api.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    api.set_defaults(handler=_api)
    worker = commands.add_parser("worker", help="run a Celery worker")
    worker.add_argument("--queues", default=QUEUES)
    worker.add_argument("--concurrency", type=int, default=2)
    worker.set_defaults(handler=_worker)
    beat = commands.add_parser("beat", help="run the Celery beat scheduler")
    beat.set_defaults(handler=_beat)
    migrate = commands.add_parser("migrate", help="upgrade the schema and create the app role (runs as owner)")
    migrate.set_defaults(handler=_migrate)
    tenant = commands.add_parser("tenant", help="manage tenants")
    tenant_commands = tenant.add_subparsers(dest="tenant_command", required=True)
    create = tenant_commands.add_parser("create", help="create a tenant and print its first API key")
    create.add_argument("--name", required=True)
    create.add_argument("--email", required=True)
    create.add_argument("--password", help="owner password (default: read TRAILMARK_OWNER_PASSWORD)")
    create.add_argument("--slug")
    create.set_defaults(handler=_tenant_create)
    ingest = commands.add_parser("ingest", help="the ingest stream between collect and the database")
    ingest_commands = ingest.add_subparsers(dest="ingest_command", required=True)
    dead = ingest_commands.add_parser(
        "dead-letters", help="list the entries ingest could not store, with why; --replay puts them back"
    )
    dead.add_argument("--replay", action="store_true", help="move them back into the ingest stream (each once)")
    dead.add_argument("--limit", type=_positive, default=100, help="list at most this many (oldest first)")
    dead.set_defaults(handler=_ingest_dead_letters)
    reports = commands.add_parser("reports", help="the daily rollups the reports read")
    reports_commands = reports.add_subparsers(dest="reports_command", required=True)
    rebuild = reports_commands.add_parser(
        "rebuild", help="delete and re-derive the rollups of some days from the stored visits and contacts"
    )
    rebuild.add_argument("--from", dest="start", type=date.fromisoformat, required=True, help="first day, YYYY-MM-DD")
    rebuild.add_argument("--to", dest="end", type=date.fromisoformat, required=True, help="last day, inclusive")
    rebuild.add_argument("--tenant", type=UUID, action="append", help="only this tenant id (repeatable)")
    rebuild.set_defaults(handler=_reports_rebuild)
    citus = commands.add_parser(
        "citus-sql", help="print the SQL that distributes this schema on Citus (docs/scale.md); changes nothing"
    )
    citus.set_defaults(handler=_citus_sql)
    return parser


EMBEDDED_SETTINGS = (
    "TRAILMARK_DATABASE_URL",
    "TRAILMARK_MIGRATION_DATABASE_URL",
    "TRAILMARK_REDIS_URL",
    "TRAILMARK_SIGNING_KEYS",
    "TRAILMARK_SECRET_KEYS",
)
RUNNING_FILE = "running.json"
"""In the data folder while `trailmark run` serves the embedded default: its services' settings (mode 600)."""


def _beside_run(settings: Settings) -> Settings:
    """With no URLs configured, the settings of the embedded services a `trailmark run` in the same data
    folder is serving, so `trailmark ingest dead-letters` or `tenant create` work beside it."""
    path = settings.data_dir / RUNNING_FILE
    if not settings.embedded or not path.exists():
        return settings
    running: dict[str, str] = json.loads(path.read_text())
    if not _redis_answers(running["TRAILMARK_REDIS_URL"]):
        return settings  # left behind by a run that was killed: nothing serves there any more
    os.environ.update({k: v for k, v in running.items() if k not in os.environ})
    get_settings.cache_clear()
    return get_settings()


def _redis_answers(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's multi-process folder (``tenants.metrics``), read when it is first imported: set here, before
anything imports it. ``trailmark run`` gives all its processes one, emptied at start; ``/metrics`` adds them up."""


def _own_metrics_directory() -> None:
    """An API or worker started on its own with no metrics folder gets a fresh one, removed when it exits. To scrape
    the workers of a host through its API, give them all the same folder, emptied before they start."""
    if os.environ.get(METRICS_DIR_ENV):
        return  # whoever set it (trailmark run, the deployment) prepared it
    path = tempfile.mkdtemp(prefix="trailmark-metrics-")
    os.environ[METRICS_DIR_ENV] = path
    atexit.register(shutil.rmtree, path, ignore_errors=True)


def _require_services(settings: Settings) -> None:
    if settings.database_url is None or settings.redis_url is None:
        raise SettingsError(
            "TRAILMARK_DATABASE_URL and TRAILMARK_REDIS_URL must be set "
            "(or start `trailmark run`, whose embedded services the other commands then use)"
        )


def _api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from tenants.logs import configure_logging

    _require_services(settings)
    configure_logging()
    _own_metrics_directory()
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=args.workers,
        # uvicorn's lines go through Trailmark's handler (text or JSON, TRAILMARK_LOG_LEVEL) like all others.
        log_config=None,
        log_level=None,
        access_log=False,
        proxy_headers=False,  # client addresses come from configured proxies only
    )
    return 0


def _celery_options(settings: Settings) -> list[str]:
    """Celery prints a start-up banner (its configuration, every task's name): only when debugging in text,
    never among JSON lines."""
    return [] if settings.log_level <= logging.DEBUG and not settings.log_json else ["--quiet"]


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    _require_services(settings)
    _own_metrics_directory()
    from workers.app import celery_app

    celery_app.worker_main(
        [
            *_celery_options(settings),
            "worker",
            "--queues",
            args.queues,
            "--concurrency",
            str(args.concurrency),
            # A node name of its own per worker process: on RabbitMQ each node's remote-control queue is exclusive,
            # so a second worker of one host under the default name (celery@host) would be refused.
            "--hostname",
            f"trailmark-{os.getpid()}@%h",
            "--loglevel",
            logging.getLevelName(settings.log_level),
        ]
    )
    return 0


def _beat(settings: Settings, _: argparse.Namespace) -> int:
    _require_services(settings)
    from workers.app import celery_app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    celery_app.start(
        [
            *_celery_options(settings),
            "beat",
            "--loglevel",
            logging.getLevelName(settings.log_level),
            "--schedule",
            str(settings.data_dir / "celerybeat-schedule"),
        ]
    )
    return 0


def _migrate(settings: Settings, _: argparse.Namespace) -> int:
    from tenants.isolation.migrate import MigrationError, migrate

    _require_services(settings)
    assert settings.migration_database_url and settings.database_url
    try:
        migrate(settings.migration_database_url, settings.database_url)
    except MigrationError as error:
        print(f"trailmark: migrate: {error}", file=sys.stderr)
        return 1
    print("trailmark: database at head")
    return 0


def _tenant_create(settings: Settings, args: argparse.Namespace) -> int:
    from tenants.accounts.service import signup
    from tenants.errors import DomainError

    _require_services(settings)
    password = args.password or os.environ.get("TRAILMARK_OWNER_PASSWORD", "")
    try:
        result = signup(name=args.name, owner_email=args.email, password=password, slug=args.slug)
    except DomainError as error:
        print(f"trailmark: {error.message} {getattr(error, 'errors', '') or ''}".rstrip(), file=sys.stderr)
        return 1
    print(
        json.dumps({"tenant_id": str(result.tenant.id), "slug": result.tenant.slug, "api_key": result.api_key.secret})
    )
    return 0


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return number


def _ingest_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    from tenants.redis_store import get_ingest_redis
    from tenants.tracking.buffer import dead_letter_count, dead_letters, replay_dead_letters

    _require_services(settings)
    client, shards = get_ingest_redis(), settings.ingest_shards
    if args.replay:
        moved = replay_dead_letters(client, shard_count=shards)
        print(f"trailmark: replayed {moved} dead letters into the ingest streams")
        return 0
    for letter in dead_letters(client, args.limit, shard_count=shards):
        tenant = letter.tenant_id or "unknown"
        at = letter.dead_lettered_at.isoformat(timespec="seconds")
        print(
            f"{letter.id}  {at}  shard {letter.shard}  entry {letter.entry_id}  tenant {tenant}  "
            f"{letter.hits} hits: {letter.reason}"
        )
    print(f"trailmark: {dead_letter_count(client, shard_count=shards)} dead letters")
    return 0


def _reports_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from tenants.reports.rollups import rebuild_tenants
    from tenants.reports.service import MAX_RANGE_DAYS

    _require_services(settings)
    if args.end < args.start or (args.end - args.start).days >= MAX_RANGE_DAYS:
        print(f"trailmark: --to must be on or after --from, within {MAX_RANGE_DAYS} days", file=sys.stderr)
        return 2
    count = rebuild_tenants(args.start, args.end, args.tenant)
    print(f"trailmark: rebuilt the rollups of {args.start} to {args.end} for {count} tenant(s)")
    return 0


def _citus_sql(settings: Settings, _: argparse.Namespace) -> int:
    import psycopg

    from tenants.isolation import citus

    _require_services(settings)
    assert settings.database_url
    # Reads the catalog only; the app role may, and the statements run later, by hand, on the coordinator.
    with psycopg.connect(settings.database_url.replace("postgresql+psycopg://", "postgresql://", 1)) as connection:
        problems = citus.violations(connection)
        if problems:
            print("trailmark: the schema breaks Citus rules:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        print(citus.distribution_sql(connection), end="")
    return 0


class _Stop(Exception):
    pass


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    """Supervise API, worker and beat; with no URLs, inside embedded PostgreSQL and Redis."""
    with warnings.catch_warnings():
        # pgserver asks for a runtime folder when imported; without a desktop session (XDG_RUNTIME_DIR unset)
        # it falls back to /tmp/runtime-<uid>, which serves as well, and the warning would say nothing useful.
        warnings.filterwarnings("ignore", "XDG_RUNTIME_DIR is not set")
        from tenants.embedded import EmbeddedServices

    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    embedded = EmbeddedServices(settings.data_dir) if settings.embedded else None
    children: dict[str, subprocess.Popen[bytes]] = {}
    env = dict(os.environ)
    from tenants.metrics import prepare_directory  # this supervisor counts nothing itself

    # One folder for every process started here, emptied of the last run's files (prometheus-client's rule).
    metrics_dir = prepare_directory(Path(env.get(METRICS_DIR_ENV) or settings.data_dir / "metrics"))
    env[METRICS_DIR_ENV] = str(metrics_dir)
    if args.verbose:
        env["TRAILMARK_LOG_LEVEL"] = "debug"
    try:
        if embedded is not None:
            print(f"trailmark: starting embedded PostgreSQL and Redis in {settings.data_dir}", flush=True)
            urls = embedded.start()
            env.update(
                TRAILMARK_DATABASE_URL=urls.app_database_url,
                TRAILMARK_MIGRATION_DATABASE_URL=urls.owner_database_url,
                TRAILMARK_REDIS_URL=urls.redis_url,
                TRAILMARK_SIGNING_KEYS=",".join(f"{k.key_id}:{_b64(k.secret)}" for k in settings.signing_keys),
                TRAILMARK_SECRET_KEYS=",".join(f"{k.key_id}:{_b64(k.secret)}" for k in settings.secret_keys),
            )
            running = settings.data_dir / RUNNING_FILE
            running.touch(mode=0o600)
            running.chmod(0o600)  # it holds the signing and secret keys, as the data folder's key files do
            running.write_text(json.dumps({k: env[k] for k in EMBEDDED_SETTINGS}))
        if embedded is not None or settings.migration_database_url != settings.database_url:
            code = subprocess.call([sys.executable, "-m", "api.cli", "migrate"], env=env)
            if code:
                return code
        demo = _ensure_demo_tenant(settings.data_dir, env) if embedded is not None else None
        for part in ("api", "worker", "beat"):
            # Own sessions: Ctrl-C in the terminal reaches this supervisor only, which stops them in order.
            children[part] = subprocess.Popen([sys.executable, "-m", "api.cli", part], env=env, start_new_session=True)
        _wait_until_serving(settings, children)
        _print_banner(settings, demo, verbose=args.verbose)
        while True:
            for part, child in children.items():
                if child.poll() is not None:
                    print(f"trailmark: {part} exited with {child.returncode}; stopping", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except _Stop as stop:
        print(f"trailmark: {stop.args[0]}: stopping", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_children(list(children.values()))
        if embedded is not None:
            (settings.data_dir / RUNNING_FILE).unlink(missing_ok=True)
            embedded.stop()


def _wait_until_serving(settings: Settings, children: dict[str, subprocess.Popen[bytes]], timeout: float = 60) -> None:
    """Until the API answers /health (so the banner's links work when it appears), a child exits, or time is up."""
    import httpx

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host  # noqa: S104 - compared, not bound
    health = f"http://{host}:{settings.port}/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(child.poll() is None for child in children.values()):
        try:
            if httpx.get(health, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


def _print_banner(settings: Settings, demo: _DemoTenant | None, *, verbose: bool) -> None:
    base = settings.base_url
    lines = [f"dashboard {base}/app"]
    if demo is not None and demo.password:
        lines.append(f"  log in: workspace demo, email {DEMO_OWNER}, password {demo.password}")
    lines += [
        f"API      {base}/api/v1",
        f"OpenAPI  {base}/api/schema/openapi.json   (browse: {base}/api/schema/swagger)",
        f"health   {base}/health   {base}/ready",
    ]
    if demo is not None:
        lines += [
            f"demo tenant API key: {demo.api_key}",
            f"demo tenant key and owner password kept in {demo.path}",
            f"try: curl -H 'Authorization: Bearer {demo.api_key}' {base}/api/v1/tenant",
        ]
    if not verbose:
        level = logging.getLevelName(settings.log_level).lower()
        lines.append(f"logs: {level} and above (TRAILMARK_LOG_LEVEL); each task and beat tick: trailmark run --verbose")
    lines.append("press Ctrl-C to stop")
    print("\n".join(f"trailmark: {line}" for line in lines), flush=True)


def _stop_children(children: list[subprocess.Popen[bytes]], timeout: float = 20) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@dataclass(frozen=True)
class _DemoTenant:
    api_key: str
    path: Path
    """Where its key and owner password are kept (mode 600), so they can be found after the output scrolled away."""
    password: str | None
    """The owner's dashboard password (None in a data folder made before the dashboard existed)."""


DEMO_OWNER = "demo@example.com"


def _ensure_demo_tenant(data_dir: Path, env: dict[str, str]) -> _DemoTenant:
    """First run: create a demo tenant and keep its key in the data folder (mode 600)."""
    path = data_dir / "demo-tenant.json"
    if not path.exists():
        password = _b64(os.urandom(12))
        output = subprocess.run(
            [
                sys.executable,
                "-m",
                "api.cli",
                "tenant",
                "create",
                "--name",
                "Demo",
                "--email",
                DEMO_OWNER,
                "--slug",
                "demo",
            ],
            env={**env, "TRAILMARK_OWNER_PASSWORD": password},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        path.touch(mode=0o600)
        path.write_text(json.dumps({**json.loads(output), "owner_email": DEMO_OWNER, "owner_password": password}))
    demo = json.loads(path.read_text())
    return _DemoTenant(str(demo["api_key"]), path, demo.get("owner_password"))


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).decode().rstrip("=")


if __name__ == "__main__":
    sys.exit(main())
