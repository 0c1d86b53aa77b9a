"""Server settings: one frozen object built from flags and environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

# The repository's own profiles/ folder; a deployment may point elsewhere.
DEFAULT_PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


@dataclass(frozen=True)
class SubscriptionSettings:
    """Subscriptions: delivery retries, SSRF allow-list, leases (see docs/subscriptions.md)."""

    # Hosts, IPs or CIDR blocks that rest-hook endpoints may use although they are loopback,
    # private or link-local (refused otherwise), and that may be plain http.
    allowed_hosts: tuple[str, ...] = ()
    # A failing endpoint is retried (exponential back-off with jitter) for this long, then
    # the Subscription goes to `error`.
    retry_window: float = 24 * 3600.0
    retry_initial: float = 1.0
    retry_max: float = 300.0
    # How long a rest-hook POST may take.
    delivery_timeout: float = 10.0
    # A dispatcher lease lasts this long unless renewed; another process takes over after it.
    lease_ttl: float = 10.0
    # How often leases are renewed and Subscriptions rescanned; the outbox polling fallback.
    scan_interval: float = 2.0
    poll_interval: float = 1.0
    # Notifications are kept this long for $events replay.
    retention_days: float = 30.0
    ws_token_ttl: float = 3600.0
    # False: this process serves the API only and runs no dispatcher.
    dispatcher: bool = True

    @property
    def idle_poll(self) -> float:
        """How often an idle deliverer looks for work it was not woken up for (a lost signal)."""
        return max(1.0, 10 * self.poll_interval)

    @classmethod
    def from_env(cls) -> SubscriptionSettings:
        hosts = os.environ.get("FHIR_SUBSCRIPTION_ALLOWED_HOSTS", "")
        return cls(
            allowed_hosts=tuple(h.strip() for h in hosts.split(",") if h.strip()),
            retry_window=_env_float("FHIR_SUBSCRIPTION_RETRY_WINDOW", cls.retry_window),
            retry_initial=_env_float("FHIR_SUBSCRIPTION_RETRY_INITIAL", cls.retry_initial),
            retry_max=_env_float("FHIR_SUBSCRIPTION_RETRY_MAX", cls.retry_max),
            delivery_timeout=_env_float("FHIR_SUBSCRIPTION_TIMEOUT", cls.delivery_timeout),
            lease_ttl=_env_float("FHIR_SUBSCRIPTION_LEASE_TTL", cls.lease_ttl),
            scan_interval=_env_float("FHIR_SUBSCRIPTION_SCAN_INTERVAL", cls.scan_interval),
            poll_interval=_env_float("FHIR_SUBSCRIPTION_POLL_INTERVAL", cls.poll_interval),
            retention_days=_env_float("FHIR_SUBSCRIPTION_RETENTION_DAYS", cls.retention_days),
            dispatcher=os.environ.get("FHIR_SUBSCRIPTION_DISPATCHER", "1") not in ("0", "false"),
        )


@dataclass(frozen=True)
class WorkflowSettings:
    """The coordination engine (docs/workflows.md). On by default; it does nothing until a
    deployment registers a workflow."""

    enabled: bool = True
    # The definitions file (durations, targets per organization); None: profiles/workflows.yaml.
    definitions: Path | None = None
    # The engine's identity in Provenance ("Device/coordination-engine" is created at start-up
    # when Device is a stored type); "" names it by display only.
    device: str = "Device/coordination-engine"
    # How often an idle timer runner looks for due timers; how long a claimed timer is held.
    timer_poll: float = 0.25
    timer_lease: float = 30.0
    # A deployment's workflows by name, "package.module:factory" (the factory answers a
    # Workflow or a list of them), beside those handed to create_app.
    modules: tuple[str, ...] = ()
    # The workflows the server ships (workflows.builtin), registered before `modules`.
    builtin: bool = True

    @classmethod
    def from_env(cls) -> WorkflowSettings:
        definitions = os.environ.get("FHIR_WORKFLOW_DEFINITIONS")
        modules = os.environ.get("FHIR_WORKFLOW_MODULES", "")
        return cls(
            modules=tuple(m.strip() for m in modules.split(",") if m.strip()),
            builtin=os.environ.get("FHIR_WORKFLOW_BUILTIN", "1") not in ("0", "false"),
            enabled=os.environ.get("FHIR_WORKFLOWS", "1") not in ("0", "false"),
            definitions=Path(definitions) if definitions else None,
            device=os.environ.get("FHIR_WORKFLOW_DEVICE", cls.device),
            timer_poll=_env_float("FHIR_WORKFLOW_TIMER_POLL", cls.timer_poll),
            timer_lease=_env_float("FHIR_WORKFLOW_TIMER_LEASE", cls.timer_lease),
        )


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    # Public base URL of the FHIR endpoint, used in Location headers and Bundle links.
    base_url: str = "http://127.0.0.1:8080/fhir"
    # None means: start the embedded SecantusDB child process.
    mongodb_uri: str | None = None
    database: str = "fhir"
    data_dir: Path = Path("data")
    profiles_dir: Path = DEFAULT_PROFILES_DIR
    max_body_bytes: int = 16 * 1024 * 1024
    # Guards against pathological JSON that would exhaust the stack of any recursive walker.
    max_json_depth: int = 64
    # None: FHIR_AUTH_DISABLED decides (auth is on unless it says otherwise).
    auth_enabled: bool | None = None
    max_bundle_entries: int = 1000
    # Batch entries on distinct resources run this many at a time (fhir_server/batch/batch.py).
    batch_concurrency: int = 32
    # Those running at once share transactions (fhir_server/storage/pipeline/group.py).
    batch_group_commit: bool = True
    default_page_size: int = 50
    max_page_size: int = 1000
    # Seek pagination (fhir_server.search.seek); off only to measure what it saves.
    search_seek: bool = True
    # Current documents kept per process for reads by id (storage/readcache.py); 0: none.
    read_cache: int = 10_000
    subscriptions: SubscriptionSettings = field(default_factory=SubscriptionSettings)
    # Connection timeouts (seconds): a client has this long to send a request's headers
    # (from connecting, or from the first byte of a next request), then its body; an idle
    # keep-alive connection is closed after keep_alive_timeout. Without them, connections
    # that send partial headers or nothing at all are held forever.
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keep_alive_timeout: float = 5.0
    # How long a request waits for an unreachable database before it is answered 503.
    database_timeout: float = 2.0
    # Retry-After (seconds) on a 503 while the database is unreachable.
    retry_after: int = 5
    workflows: WorkflowSettings = field(default_factory=WorkflowSettings)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def path_prefix(self) -> str:
        """The path part of base_url ("/fhir"), where the FHIR routes are mounted."""
        rest = self.base_url.split("://", 1)[-1]
        slash = rest.find("/")
        return rest[slash:].rstrip("/") if slash >= 0 else ""

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        host = os.environ.get("FHIR_HOST", cls.host)
        port = _env_int("FHIR_PORT", cls.port)
        settings = cls(
            host=host,
            port=port,
            base_url=os.environ.get("FHIR_BASE_URL", f"http://{host}:{port}/fhir"),
            mongodb_uri=os.environ.get("MONGODB_URI") or None,
            database=os.environ.get("FHIR_DATABASE", cls.database),
            data_dir=Path(os.environ.get("FHIR_DATA_DIR", str(cls.data_dir))),
            profiles_dir=Path(os.environ.get("FHIR_PROFILES_DIR", str(DEFAULT_PROFILES_DIR))),
            max_body_bytes=_env_int("FHIR_MAX_BODY_BYTES", cls.max_body_bytes),
            max_bundle_entries=_env_int("FHIR_MAX_BUNDLE_ENTRIES", cls.max_bundle_entries),
            batch_concurrency=max(1, _env_int("FHIR_BATCH_CONCURRENCY", cls.batch_concurrency)),
            batch_group_commit=os.environ.get("FHIR_BATCH_GROUP_COMMIT", "1") not in ("0", "false"),
            default_page_size=_env_int("FHIR_DEFAULT_PAGE_SIZE", cls.default_page_size),
            max_page_size=_env_int("FHIR_MAX_PAGE_SIZE", cls.max_page_size),
            search_seek=os.environ.get("FHIR_SEARCH_SEEK", "1") != "0",
            read_cache=max(0, _env_int("FHIR_READ_CACHE", cls.read_cache)),
            subscriptions=SubscriptionSettings.from_env(),
            header_timeout=_env_float("FHIR_HEADER_TIMEOUT", cls.header_timeout),
            body_timeout=_env_float("FHIR_BODY_TIMEOUT", cls.body_timeout),
            keep_alive_timeout=_env_float("FHIR_KEEP_ALIVE_TIMEOUT", cls.keep_alive_timeout),
            database_timeout=_env_float("FHIR_DATABASE_TIMEOUT", cls.database_timeout),
            retry_after=_env_int("FHIR_RETRY_AFTER", cls.retry_after),
            workflows=WorkflowSettings.from_env(),
        )
        clean = {k: v for k, v in overrides.items() if v is not None}
        return replace(settings, **clean)  # type: ignore[arg-type]
