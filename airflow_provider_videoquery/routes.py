"""Every gateway route as data: where to create, query and fetch a task, and how its answer unwraps.

A route family is one :class:`RouteSpec` in :data:`ROUTES`; the hook builds its URLs from it and
unwraps each answer with it before the one parser (:func:`~airflow_provider_videoquery.models.parse_task`)
sees it. Adding a gateway family is one entry here plus its tests. Pure: no Airflow, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from airflow_provider_videoquery.models import TaskStatus

#: Where a route's templates put the task id (encoded as a path segment or a query value: it has ``:``).
ID = "{id}"


class Route(StrEnum):
    """Which route a gateway serves video tasks on (the ``route`` extra / ``route=`` parameter)."""

    UNIFIED = "unified"
    VIDU_NATIVE = "vidu-native"
    OPENAI = "openai"
    NEW_API = "new-api"


class EnvelopeError(ValueError):
    """An answer in the route's envelope whose code says it is not a task answer."""


@dataclass(frozen=True)
class Envelope:
    """An answer wrapped as ``{code_key: "success", data_key: {…the task…}}`` (new-api's TaskResponse).

    An answer without ``code_key`` is taken as already unwrapped (a proxy may strip the wrapper);
    ``data_key`` null or missing means "no task data yet" (:meth:`open` returns None).
    """

    data_key: str = "data"
    code_key: str = "code"
    ok_codes: frozenset[str] = frozenset({"success"})

    def open(self, answer: Mapping[str, Any]) -> Mapping[str, Any] | None:
        if self.code_key not in answer:
            return answer
        code = answer.get(self.code_key)
        if str(code).lower() not in self.ok_codes:
            said = answer.get("message") or code
            raise EnvelopeError(f"the gateway answered {self.code_key}={code!r}: {said}")
        data = answer.get(self.data_key)
        return data if isinstance(data, Mapping) else None


@dataclass(frozen=True)
class RouteSpec:
    """One route family: paths relative to the gateway's base URL, with :data:`ID` for the task id.

    :param query: the status query (``GET``).
    :param create: the create call (``POST``, JSON body).
    :param content: where the gateway itself serves the finished file, when the answer names none.
    :param envelope: how the answers are wrapped; None: they are the task itself.
    :param id_keys: fields of the create answer that carry the id to poll with, in order.
    :param statuses: the route's own status words (lower case) where they differ from the shared table.
    """

    query: str
    create: str
    content: str | None = None
    envelope: Envelope | None = None
    id_keys: tuple[str, ...] = ("id", "task_id")
    statuses: Mapping[str, TaskStatus] = field(default_factory=dict)

    def query_url(self, base_url: str, video_task_id: str) -> str:
        return _fill(base_url, self.query, video_task_id)

    def create_url(self, base_url: str) -> str:
        return base_url + self.create

    def content_url(self, base_url: str, video_task_id: str) -> str | None:
        return None if self.content is None else _fill(base_url, self.content, video_task_id)

    def unwrap(self, answer: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The task inside an answer; None when the route's envelope holds no task data yet."""
        return answer if self.envelope is None else self.envelope.open(answer)

    def new_id(self, answer: Mapping[str, Any]) -> str | None:
        """The id a create answer names, by the route's preference."""
        for key in self.id_keys:
            value = answer.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                return str(value)
        return None


def _fill(base_url: str, template: str, video_task_id: str) -> str:
    return base_url + template.replace(ID, quote(video_task_id, safe=""))


ROUTES: Mapping[Route, RouteSpec] = {
    Route.UNIFIED: RouteSpec(query=f"/v1/video/query?id={ID}", create="/v1/video/create"),
    Route.VIDU_NATIVE: RouteSpec(
        query=f"/vidu-native/video/generations/{ID}", create="/vidu-native/video/generations"
    ),
    Route.OPENAI: RouteSpec(
        query=f"/v1/videos/{ID}", create="/v1/videos", content=f"/v1/videos/{ID}/content"
    ),
    Route.NEW_API: RouteSpec(
        query=f"/v1/video/generations/{ID}",
        create="/v1/video/generations",
        envelope=Envelope(),
        id_keys=("task_id", "id"),
    ),
}


def spec(route: Route | str) -> RouteSpec:
    """The description of ``route``."""
    return ROUTES[Route(route)]


__all__ = ["ID", "ROUTES", "Envelope", "EnvelopeError", "Route", "RouteSpec", "spec"]
