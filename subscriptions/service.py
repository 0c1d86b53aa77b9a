"""The subscription machinery of one server process, built once and started with the app."""

from __future__ import annotations

import asyncio
import logging

from pymongo import IndexModel

from fhir_server.auth.revocation import revocation_list
from fhir_server.auth.settings import AuthSettings
from fhir_server.config import Settings
from fhir_server.storage.database import Database
from fhir_server.storage.outbox import outbox_indexes
from fhir_server.storage.repository import Repository
from fhir_server.tasks import stop_tasks
from subscriptions.active import ActiveSubscriptions
from subscriptions.audience import Audience
from subscriptions.channels import Handler, InProcessHandlers, RestHook
from subscriptions.delivery import Delivery
from subscriptions.dispatcher import Dispatcher
from subscriptions.grant import Grants, Registrations
from subscriptions.guard import SubscriptionGuard
from subscriptions.hub import Hub
from subscriptions.inprocess import InProcessSubscribers
from subscriptions.leases import Leases
from subscriptions.matcher import Matcher
from subscriptions.notify import Renderer
from subscriptions.operations import Operations, websocket_url
from subscriptions.store import Store, store_indexes
from subscriptions.topics import Topic
from subscriptions.websocket import WebSocketSessions

log = logging.getLogger(__name__)


def subscription_indexes() -> dict[str, list[IndexModel]]:
    """Collections and indexes to create at start-up (before any transaction writes them)."""
    return {**outbox_indexes(), **store_indexes()}


class SubscriptionService:
    def __init__(self, settings: Settings, database: Database, repository: Repository,
                 guard: SubscriptionGuard) -> None:
        """`guard`: the Subscription interceptor, registered before the repository was built;
        its parser (with the topics) and endpoint policy are the ones every part here uses."""
        s = settings.subscriptions
        self.settings = settings
        self.parser = guard.parser
        self.topics: dict[str, Topic] = guard.parser.topics
        self.policy = guard.policy
        self.guard = guard
        self.store = Store(database.db)
        self.hub = Hub()
        self.leases = Leases(database.db, s.lease_ttl)
        # The API's own revocation list for this database (one per handle), so a revoked token's
        # grant lapses when the token is refused.
        refresh = AuthSettings.from_env(settings).revocation_refresh_seconds
        self.grants = Grants(revocation_list(database.db, refresh), Registrations(database.db, refresh))
        self.renderer = Renderer(repository, settings.base_url)
        self.handlers = InProcessHandlers()
        self.rest_hook = RestHook(self.policy, s.delivery_timeout)
        self.active = ActiveSubscriptions(self.parser, repository, settings.base_url)
        self.audience = Audience(repository, self.grants, self.active, settings.base_url)
        self.matcher = Matcher(database, self.active, self.audience, self.store, self.leases, self.hub, s)
        self.delivery = Delivery(repository, self.store, self.hub, self.renderer, self.rest_hook,
                                 self.handlers, self.grants, s, settings.base_url)
        self.dispatcher = Dispatcher(self.delivery, self.matcher, self.leases, self.parser)
        self.websockets = WebSocketSessions(repository, self.store, self.hub, self.renderer,
                                            self.grants, self.parser, s, settings.base_url)
        self.operations = Operations(repository, self.store, self.renderer, self.parser, s,
                                     settings.base_url)
        self.in_process = InProcessSubscribers(repository, self.handlers, settings.base_url)
        self.websocket_url = websocket_url(settings.base_url)
        self._tasks: list[asyncio.Task[None]] = []
        self._db = database.db

    async def start(self) -> None:
        s = self.settings.subscriptions
        self._tasks.append(asyncio.create_task(self.hub.follow(self._db, s.poll_interval)))
        if s.dispatcher:
            self._tasks.append(asyncio.create_task(self.dispatcher.run()))

    async def stop(self) -> None:
        await stop_tasks(self._tasks)
        self._tasks.clear()
        await self.dispatcher.stop()
        await self.rest_hook.close()

    async def subscribe(self, name: str, handler: Handler, *, topic: str | None = None,
                        criteria: str | None = None, filters: list[str] | None = None,
                        content: str = "full-resource") -> str:
        """An in-process subscriber (see `subscriptions.inprocess`); answers the Subscription id."""
        sub_id = await self.in_process.subscribe(name, handler, topic=topic, criteria=criteria,
                                                 filters=filters, content=content)
        self.hub.kick()
        return sub_id
