"""Publishing through the Redis stream of a cluster of hubs, without HTTP.

Every node of a cluster (``ssehub --redis ...``) follows one stream and
delivers each entry to its subscribers, with the entry id as the event id.
An app that already holds a Redis connection can append to it directly.
Each event is checked first with the hub's own rules (:mod:`ssehub._rules`):
a node can only skip an invalid entry, and the publisher would never hear.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from ._rules import JsonDumps, Publication, check, check_batch, dumps_compact
from ._tokens import topic_list

DEFAULT_MAXLEN = 100_000  # the hub's --redis-maxlen default


class _Commands(Protocol):
    """What RedisHub needs of a redis-py client (``redis.Redis``, ``redis.RedisCluster``)."""

    def execute_command(self, *args: Any, **options: Any) -> Any: ...

    def pipeline(self, transaction: bool = ...) -> Any: ...


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisHub:
    """:meth:`publish` and :meth:`publish_many` as ``XADD`` to ``stream`` (the
    hub's ``--redis-stream``), trimmed to about ``maxlen`` entries
    (``approximate=False`` trims exactly; ``maxlen=None`` never). Returns the
    stream ids, which are the events' ids on every node. Invalid events raise
    :class:`ssehub.PublishError` (status 400, the hub's message) before
    anything is written."""

    def __init__(
        self,
        redis_client: _Commands,
        stream: str = "ssehub",
        *,
        maxlen: int | None = DEFAULT_MAXLEN,
        approximate: bool = True,
        json_dumps: JsonDumps = dumps_compact,
    ) -> None:
        self.redis = redis_client
        self.stream = stream
        self.maxlen = maxlen
        self.approximate = approximate
        self.dumps = json_dumps

    def _xadd(self, publication: Publication) -> list[object]:
        command: list[object] = ["XADD", self.stream]
        if self.maxlen is not None:
            command += ["MAXLEN", "~" if self.approximate else "=", self.maxlen]
        command.append("*")
        for name, value in publication.fields():
            command += [name, value]
        return command

    def publish(self, topic: str | Iterable[str], data: object, *, event: str | None = None, retry: int | None = None) -> str:
        """Appends one event; returns its id. See :meth:`ssehub.Hub.publish`."""
        publication = check({"topic": topic_list(topic), "data": data, "event": event, "retry": retry}, self.dumps)
        return _text(self.redis.execute_command(*self._xadd(publication)))

    def publish_many(self, events: Iterable[Mapping[str, Any]]) -> list[str]:
        """Appends a batch in one ``MULTI``/``EXEC``: all of it or, if any item
        is invalid, none of it. Returns the ids, in order."""
        publications = check_batch(list(events), self.dumps)
        pipe = self.redis.pipeline(transaction=True)
        for publication in publications:
            pipe.execute_command(*self._xadd(publication))
        return [_text(entry_id) for entry_id in pipe.execute()]
