"""VideoQueryHook: the gateway's create and query calls, sync for workers and async for the triggerer."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import httpx
from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson
from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_videoquery.exceptions import (
    VideoCreateUncertainError,
    VideoQueryAuthError,
    VideoQueryError,
    VideoQueryResponseError,
)
from airflow_provider_videoquery.hooks._aio import AsyncSender
from airflow_provider_videoquery.hooks._deadline import SocketDeadline
from airflow_provider_videoquery.hooks._http import (
    ANSWER_BY,
    Action,
    AnswerBody,
    ClientKey,
    GatewayConfig,
    Outcome,
    RetryPolicy,
    Route,
    describe,
    exchange,
    json_body,
    tls_context,
    uncertain_create,
)
from airflow_provider_videoquery.hooks._probe import PROBE_TASK_ID, verdict
from airflow_provider_videoquery.hooks._reads import TaskReads
from airflow_provider_videoquery.images.multipart import encode
from airflow_provider_videoquery.models import VideoTask, elide_inline, parse_task
from airflow_provider_videoquery.routes import EnvelopeError, RouteSpec, spec

T = TypeVar("T")

# Enough sockets for a busy triggerer; the rest queue inside aiohttp's connector, not in our code.
_ASYNC_MAX_CONNECTIONS = 64


class VideoQueryHook(BaseHook):
    """Talk to an AI video gateway (yunwu, anyapi, …) configured in a ``videoquery`` connection.

    The connection's host is the base URL and its password the API key. The async methods (``a*``)
    resolve the connection without any sync Airflow API and share one HTTP client per event loop, so
    thousands of triggers in one triggerer cost one connection pool.

    :param videoquery_conn_id: the Airflow connection to use.
    :param route: ``unified``, ``vidu-native``, ``openai`` or ``new-api``; default: the connection's
        ``route`` extra.
    :param retry_policy: how transient failures (429, 5xx, timeouts, resets) are retried.
    """

    conn_name_attr = "videoquery_conn_id"
    default_conn_name = "videoquery_default"
    conn_type = "videoquery"
    hook_name = "Video Query (AI video gateway)"

    def __init__(
        self,
        videoquery_conn_id: str = default_conn_name,
        route: str | Route | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        self.videoquery_conn_id = videoquery_conn_id
        self.route = Route(route) if route else None
        self.retry_policy = retry_policy or RetryPolicy()
        self._lease: _Lease | None = None
        self._last_url: tuple[str, httpx.URL] | None = None

    # -- connection --------------------------------------------------------------------------------

    @cached_property
    def config(self) -> GatewayConfig:
        """The connection, resolved once (sync lookup: workers only)."""
        conn = self.get_connection(self.videoquery_conn_id)
        return GatewayConfig.from_connection(
            self.videoquery_conn_id, _base_url(conn), conn.password, conn.extra_dejson
        )

    async def aconfig(self) -> GatewayConfig:
        """The connection, resolved once with async lookups only; fills the same slot as ``config``."""
        if "config" not in self.__dict__:
            self.__dict__["config"] = await _recent_configs.resolve(self.videoquery_conn_id, self._lookup)
        config: GatewayConfig = self.__dict__["config"]
        return config

    async def _lookup(self) -> GatewayConfig:
        conn = await get_async_connection(self.videoquery_conn_id)
        extra = await get_async_extra_dejson(conn)
        return GatewayConfig.from_connection(self.videoquery_conn_id, _base_url(conn), conn.password, extra)

    def get_conn(self) -> httpx.Client:
        """The sync HTTP client (one per hook)."""
        return self._sync_client

    @cached_property
    def _sync_client(self) -> httpx.Client:
        verify, proxy = self.config.client_key
        # No keep-alive: an answer's deadline watches the socket of each new connection (a reused one
        # would go unwatched); the sync path makes few calls.
        limits = httpx.Limits(max_keepalive_connections=0)
        transport = httpx.HTTPTransport(verify=tls_context(verify), proxy=proxy, limits=limits)
        return httpx.Client(transport=transport, timeout=self.config.timeout)

    def close(self) -> None:
        if "_sync_client" in self.__dict__:
            self.__dict__.pop("_sync_client").close()

    async def aclose(self) -> None:
        """Give back the shared async client this hook holds (the one it took, on the loop it took it)."""
        lease, self._lease = self._lease, None
        if lease is not None:
            await _shared_clients.release(lease)

    async def __aenter__(self) -> VideoQueryHook:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _aclient(self) -> AsyncSender:
        """The shared client for this loop and the connection's client key; taken once per hook.

        A hook moved to another loop (or whose connection now needs another client) gives the old one
        back first. Nothing awaits between the check and the take, so concurrent first calls take one.
        """
        key = (await self.aconfig()).client_key
        loop = asyncio.get_running_loop()
        lease = self._lease
        if lease is not None and (lease.loop is not loop or lease.key != key):
            self._lease = None
            await _shared_clients.release(lease)
        if self._lease is None:
            self._lease = _shared_clients.acquire(key)
        return self._lease.client

    # -- calls ---------------------------------------------------------------------------------------

    def get_task(
        self, video_task_id: str, route: str | Route | None = None, *, deadline: float | None = None
    ) -> VideoTask:
        """Query a task once (transient failures are retried) and normalize the answer.

        Its answers, retries included, get the connection's timeout in total: a server that trickles
        its answer cannot hold the call. ``deadline`` (epoch seconds): no backoff or ``Retry-After``
        sleep runs past it.
        """
        return self._call_sync(lambda: self._query(video_task_id, route, deadline, self._answer_budget()))

    async def aget_task(
        self, video_task_id: str, route: str | Route | None = None, *, deadline: float | None = None
    ) -> VideoTask:
        """Async :meth:`get_task`, for triggers: never touches a sync connection API."""
        return await self._call_async(lambda: self._query(video_task_id, route, deadline))

    def create_task(
        self, model: str, prompt: str, route: str | Route | None = None, **fields: Any
    ) -> VideoTask:
        """Submit a new video task (the route's create, e.g. ``POST /v1/video/create``); extra fields pass
        through unchanged (a :class:`~airflow_provider_videoquery.images.multipart.FilePart` value sends
        the body as ``multipart/form-data``, the file streamed).

        A create is not idempotent, so it is retried only when the gateway surely did not take it
        (429/503, a refused key, or no connection was made). Its answers get the connection's timeout
        in total, as a query's.
        """
        body = {"model": model, "prompt": prompt, **fields}
        return self._call_sync(lambda: self._create(body, route, self._answer_budget()))

    def read_tasks(self, video_task_ids: Iterable[str], concurrency: int = 8) -> TaskReads:
        """Re-read many tasks at once from a worker (a batch about to store them): the async path on a
        background thread, ``concurrency`` reads in flight, each within the connection's timeout. Use
        as ``with hook.read_tasks(ids) as reads: for video_task_id, outcome in reads: …``; a read that
        failed comes back as its exception (read that task again with :meth:`get_task`)."""
        reader = VideoQueryHook(self.videoquery_conn_id, self.route, self.retry_policy)
        reader.__dict__["config"] = self.config  # resolved here: no connection lookup inside the loop
        return TaskReads(reader, video_task_ids, concurrency, self.config.read_timeout)

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button: query a made-up task; only the gateway's own JSON "unknown task" answer
        proves the key (a website, a bare 404 or a login redirect fails, saying what was reached)."""
        probe = VideoQueryHook(self.videoquery_conn_id, self.route, RetryPolicy(max_attempts=2))
        try:
            return probe._call_sync(lambda: probe._probe(probe._answer_budget()))
        except Exception as err:
            return False, str(err)
        finally:
            probe.close()

    # -- plans: what to send and how to read the answer, shared by sync and async ------------------

    def _resolve_route(self, route: str | Route | None) -> Route:
        return Route(route) if route else (self.route or self.config.route)

    def _answer_budget(self) -> float:
        """Seconds the answers of one worker-side call may take in total: the connection's timeout."""
        return self.config.read_timeout

    def _query(
        self,
        video_task_id: str,
        route: str | Route | None,
        deadline: float | None = None,
        budget: float | None = None,
    ) -> Generator[Action, Outcome, VideoTask]:
        config, resolved = self.config, self._resolve_route(route)
        what = f"Querying video task {video_task_id!r} at {config.shown_url} ({resolved.value} route)"
        request = _get(config, self._parsed(config.query_url(video_task_id, resolved)))
        response = yield from exchange(
            request, self.retry_policy, what, deadline=deadline, answer_budget=budget
        )
        route_spec = spec(resolved)
        return parse_task(
            _unwrap(route_spec, json_body(response, what), what),
            video_task_id,
            config.content_url(video_task_id, resolved),
            route_spec.statuses,
        )

    def _parsed(self, url: str) -> httpx.URL:
        """``url`` parsed, kept for the next call: a trigger's hook polls one URL, so it is parsed once
        per wait instead of once per poll (parsing was a tenth of a poll's own CPU)."""
        last = self._last_url
        if last is None or last[0] != url:
            last = self._last_url = (url, httpx.URL(url))
        return last[1]

    def _probe(self, budget: float | None = None) -> Generator[Action, Outcome, tuple[bool, str]]:
        config, resolved = self.config, self._resolve_route(None)
        what = f"Testing the connection {self.videoquery_conn_id!r} at {config.shown_url}"
        request = _get(config, config.query_url(PROBE_TASK_ID, resolved))
        response = yield from exchange(
            request, self.retry_policy, what, check_status=False, answer_budget=budget
        )
        return verdict(response, config.shown_url, resolved.value)

    def _create(
        self, body: dict[str, Any], route: str | Route | None, budget: float | None = None
    ) -> Generator[Action, Outcome, VideoTask]:
        config, resolved = self.config, self._resolve_route(route)
        what = f"Creating a {body.get('model')!r} video task at {config.shown_url}"
        with encode(body) as encoded:  # JSON, or multipart when an image goes as a file
            request = httpx.Request(
                "POST",
                config.create_url(resolved),
                headers=encoded.headers(config.auth_headers()),
                extensions={"timeout": config.timeout.as_dict()},
                **encoded.content,
            )
            response = yield from exchange(
                request, self.retry_policy, what, idempotent=False, answer_budget=budget
            )
        try:
            task = _created(spec(resolved), response, what)
        except VideoCreateUncertainError:
            raise
        except Exception as err:  # anything while reading a 200 the gateway may have acted on
            said = str(err).removeprefix(f"{what}: ") if isinstance(err, VideoQueryError) else describe(err)
            raise uncertain_create(request, what, said) from err
        self.log.info("Created %s", task.summary())
        return task

    # -- drivers: the only places that do I/O --------------------------------------------------------

    def _call_sync(self, plan: Callable[[], Generator[Action, Outcome, T]]) -> T:
        """Run a plan; on a refused key, look the connection up again and, if its key changed, rerun once."""
        try:
            return self._run_sync(plan())
        except VideoQueryAuthError:
            stale = self.__dict__.pop("config", None)
            if not self._key_rotated(stale, self.config):
                raise
        return self._run_sync(plan())

    async def _call_async(self, plan: Callable[[], Generator[Action, Outcome, T]]) -> T:
        """:meth:`_call_sync` for the triggerer: the new lookup goes past the per-loop cache too."""
        await self.aconfig()
        try:
            return await self._run_async(plan())
        except VideoQueryAuthError:
            stale = self.__dict__.pop("config", None)
            _recent_configs.forget(self.videoquery_conn_id, stale)
            if not self._key_rotated(stale, await self.aconfig()):
                raise
        return await self._run_async(plan())

    def _key_rotated(self, stale: GatewayConfig | None, fresh: GatewayConfig) -> bool:
        """Whether the connection now holds another key than the refused one (then say so, keylessly)."""
        if stale is None or fresh.api_key == stale.api_key:
            return False
        self.log.warning(
            "The gateway refused the API key of connection %r, which now holds another one: retrying "
            "once with the new key.",
            self.videoquery_conn_id,
        )
        return True

    def _run_sync(self, plan: Generator[Action, Outcome, T]) -> T:
        client = self.get_conn()
        outcome: Outcome = None
        try:
            while True:
                action = plan.send(outcome)
                if isinstance(action, float):
                    time.sleep(action)
                    outcome = None
                    continue
                outcome = self._send_sync(client, action)
        except StopIteration as done:
            result: T = done.value
            return result

    async def _run_async(self, plan: Generator[Action, Outcome, T]) -> T:
        client = await self._aclient()
        outcome: Outcome = None
        try:
            while True:
                action = plan.send(outcome)
                if isinstance(action, float):
                    await asyncio.sleep(action)
                    outcome = None
                    continue
                outcome = await self._send_async(client, action)
        except StopIteration as done:
            result: T = done.value
            return result

    # Sending: the answer with its body read under the cap, or whatever failed; the plan decides what
    # that means (transient, unreadable, uncertain).

    def _send_sync(self, client: httpx.Client, request: httpx.Request) -> Outcome:
        """The answer is read whole before ``ANSWER_BY`` (the plan's stamp, epoch seconds) or its
        connection is shut down: read timeouts bound each read, not a trickled answer."""
        body = AnswerBody(self.config.max_answer_bytes)
        why = "the connection's timeout, for all answers of the call together"
        with SocketDeadline(request.extensions.get(ANSWER_BY), why) as deadline:
            request.extensions.update(deadline.extensions())
            try:
                response = client.send(request, stream=True)
                try:
                    for block in response.iter_bytes():
                        body.add(block)
                finally:
                    response.close()
            except Exception as err:
                return deadline.error() if deadline.expired else err
        return body.response(response)

    async def _send_async(self, client: AsyncSender, request: httpx.Request) -> Outcome:
        return await client.send(request, self.config.max_answer_bytes)


def _created(route: RouteSpec, response: httpx.Response, what: str) -> VideoTask:
    """The new task in a create's answer; raises when the answer names none."""
    answer = json_body(response, what)
    created = _unwrap(route, answer, what)
    new_id = route.new_id(created) if created is not None else None
    if new_id is None:
        raise VideoQueryResponseError(f"the answer names no task id: {elide_inline(answer)!r}")
    return parse_task(created, new_id, statuses=route.statuses)


def _unwrap(route: RouteSpec, answer: dict[str, Any], what: str) -> Mapping[str, Any] | None:
    """The task inside ``answer`` by the route's envelope (None: no task data yet)."""
    try:
        return route.unwrap(answer)
    except EnvelopeError as err:
        raise VideoQueryResponseError(f"{what}: {err}") from None


def _get(config: GatewayConfig, url: str | httpx.URL) -> httpx.Request:
    """A GET to the gateway with its credentials and timeouts (a query, or the connection test's probe)."""
    return httpx.Request(
        "GET", url, headers=config.auth_headers(), extensions={"timeout": config.timeout.as_dict()}
    )


def _base_url(conn: Any) -> str:
    """Host as the base URL; a bare host takes the connection's schema (https by default) and port."""
    host = (conn.host or "").strip()
    if not host or "://" in host:
        return host
    scheme = conn.schema if conn.schema in ("http", "https") else "https"
    port = f":{conn.port}" if conn.port else ""
    return f"{scheme}://{host}{port}"


@dataclass(frozen=True)
class _Lease:
    """A hook's hold on a shared client: which loop and key it was taken for, to give back exactly it."""

    loop: asyncio.AbstractEventLoop
    key: ClientKey
    client: AsyncSender


class _SharedClients:
    """One :class:`~._aio.AsyncSender` (an aiohttp session) per event loop and :class:`ClientKey`, shared
    by every hook on that loop.

    httpx's own async pool does work proportional to connections x waiting requests on every change;
    aiohttp's connector does not: a poll costs the same at 10 or 10,000 concurrent waits.
    """

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[ClientKey, tuple[AsyncSender, int]]
        ] = weakref.WeakKeyDictionary()

    def acquire(self, key: ClientKey) -> _Lease:
        """Take the running loop's client for ``key`` (made on first use); never awaits."""
        loop = asyncio.get_running_loop()
        clients = self._by_loop.setdefault(loop, {})
        client, users = clients.get(key) or (_new_async_client(key), 0)
        clients[key] = (client, users + 1)
        return _Lease(loop, key, client)

    async def release(self, lease: _Lease) -> None:
        """Give ``lease`` back; the last user closes the client, on the loop it belongs to."""
        clients = self._by_loop.get(lease.loop, {})
        client, users = clients.get(lease.key) or (None, 0)
        if client is not lease.client:
            return
        if users > 1:
            clients[lease.key] = (client, users - 1)
            return
        del clients[lease.key]
        if lease.loop is asyncio.get_running_loop() or lease.loop.is_closed():
            await client.aclose()  # on a closed loop this marks it closed; its sockets go with it
        else:  # still running in another thread: close it there
            asyncio.run_coroutine_threadsafe(client.aclose(), lease.loop)

    def users(self, key: ClientKey | None = None) -> int:
        """How many hooks on the running loop hold the client for ``key`` (0 when none is open)."""
        entry = self._by_loop.get(asyncio.get_running_loop(), {}).get(key or ClientKey(True, None))
        return entry[1] if entry else 0


def _new_async_client(key: ClientKey) -> AsyncSender:
    return AsyncSender(key, max_connections=_ASYNC_MAX_CONNECTIONS)


class _RecentConfigs:
    """Connections resolved on this event loop in the last minute, by conn id.

    A batch of triggers starting together would otherwise look the same connection up once each:
    concurrent hooks share one lookup, later ones reuse its result for ``ttl`` seconds, after which the
    next hook looks it up again (a rotated key is picked up). A failed lookup is not remembered.
    """

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, tuple[float, asyncio.Future[GatewayConfig]]]
        ] = weakref.WeakKeyDictionary()

    def forget(self, conn_id: str, stale: GatewayConfig | None) -> None:
        """Drop the running loop's entry for ``conn_id`` if it still holds ``stale`` (a refused key):
        the next hook looks the connection up again, and hooks refused together share that lookup."""
        entries = self._by_loop.get(asyncio.get_running_loop(), {})
        entry = entries.get(conn_id)
        if entry is None or not entry[1].done() or entry[1].cancelled() or entry[1].exception():
            return
        if entry[1].result() is stale:
            del entries[conn_id]

    async def resolve(
        self, conn_id: str, lookup: Callable[[], Coroutine[Any, Any, GatewayConfig]]
    ) -> GatewayConfig:
        entries = self._by_loop.setdefault(asyncio.get_running_loop(), {})
        entry = entries.get(conn_id)
        if entry is None or time.monotonic() - entry[0] > self.ttl:
            entry = (time.monotonic(), asyncio.ensure_future(lookup()))
            entries[conn_id] = entry
        try:
            # shield: one waiter's cancellation must not cancel the lookup the others wait for.
            return await asyncio.shield(entry[1])
        except Exception:
            if entries.get(conn_id) is entry:
                del entries[conn_id]
            raise


_shared_clients = _SharedClients()
_recent_configs = _RecentConfigs()


__all__ = ["Route", "VideoQueryHook"]
