"""The HTTP clients: :class:`Hub` and :class:`AsyncHub`, one method set.

Both are thin shells around :class:`_Core`, which builds each request and
reads each answer without doing I/O, so the two cannot drift apart. The shells
only send, and wait before a retry.

Retries: a publish is retried only when the hub said it did not apply it
(``503``, always with ``Retry-After``), at most ``retries`` times. A
connection that fails after the request may have been sent is never retried:
the hub may have published the event, and a retry would publish it twice.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from ._errors import HubError, HubUnreachable, PublishError
from ._rules import JsonDumps, dumps_compact, encode_data
from ._tokens import Key, TokenSigner, topic_list

DEFAULT_TIMEOUT = 10.0  # seconds, for each request
DEFAULT_RETRIES = 3  # retries after a 503, so 4 tries in all
MAX_RETRY_WAIT = 10.0  # seconds: the longest Retry-After honoured
PUBLISH_TOKEN_TTL = 300  # seconds: minted publish tokens, renewed a minute early

Topics = str | Iterable[str]


@dataclass(frozen=True)
class _Request:
    """A request ready to send (and to send again after a 503)."""

    path: str
    content: bytes
    expected: int  # lines in a successful answer (ids), 0 for a count


class _Core:
    """Everything about talking to the hub except the I/O."""

    def __init__(
        self,
        url: str,
        *,
        public_url: str | None,
        publish_token: str | None,
        jwt_secret: Key | None,
        jwt_private_key: Key | None,
        jwt_algorithm: str | None,
        jwt_audience: str | None,
        jwt_issuer: str | None,
        retries: int,
        json_dumps: JsonDumps,
    ) -> None:
        self.url = url.rstrip("/")
        self.public_url = (public_url or url).rstrip("/")
        self.retries = retries
        self.dumps = json_dumps
        self._publish_token = publish_token
        self.signer: TokenSigner | None = None
        if jwt_secret is not None or jwt_private_key is not None:
            self.signer = TokenSigner(
                secret=jwt_secret,
                private_key=jwt_private_key,
                algorithm=jwt_algorithm,
                audience=jwt_audience,
                issuer=jwt_issuer,
            )
        self._minted: tuple[str, int] | None = None  # a publish token and its exp
        self._lock = threading.Lock()

    # Requests.

    def _item(self, item: object) -> object:
        """One publish object for the body; ``data`` encoded as subscribers get it."""
        if not isinstance(item, Mapping):
            return item  # the hub names the error: batch items must be objects
        body = {key: item.get(key) for key in ("topic", "event", "retry")}
        if isinstance(body["topic"], tuple):
            body["topic"] = list(body["topic"])
        body["data"] = encode_data(item.get("data"), self.dumps)
        return {key: value for key, value in body.items() if value is not None}

    def _json(self, body: object) -> bytes:
        return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()

    def publish_request(self, topic: Topics, data: object, event: str | None, retry: int | str | None) -> _Request:
        topics: object = topic if isinstance(topic, str) else list(topic)
        item = {"topic": topics, "data": data, "event": event, "retry": retry}
        return _Request("/publish", self._json(self._item(item)), 1)

    def batch_request(self, events: Iterable[Mapping[str, Any]]) -> _Request:
        items = [self._item(item) for item in events]
        return _Request("/publish", self._json(items), len(items))

    def disconnect_request(self, subject: str) -> _Request:
        return _Request("/disconnect", self._json({"sub": subject}), 0)

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        token = self._credentials()
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _credentials(self) -> str | None:
        """The shared publish token, else a minted token granting every topic."""
        if self._publish_token is not None:
            return self._publish_token
        if self.signer is None:
            return None  # the hub's loopback rule
        with self._lock:
            if self._minted is None or self._minted[1] - time.time() < 60:
                self._minted = self.signer.mint(publish=["**"], expires_in=PUBLISH_TOKEN_TTL)
            return self._minted[0]

    # Answers.

    def answer(self, request: _Request, response: httpx.Response) -> list[str]:
        """The ids (or the count) of a success; raises :class:`_Retry` for a
        503 the hub invites a retry of, :class:`PublishError` for the rest."""
        text = response.text
        if response.status_code == 200:
            lines = [line for line in text.split("\n") if line]
            if request.expected and len(lines) != request.expected:
                raise HubError(f"the hub answered {len(lines)} ids for {request.expected} events")
            return lines
        message = text.strip()
        prefix = f"{response.status_code} "
        message = message[len(prefix) :] if message.startswith(prefix) else message
        retry_after = _retry_after(response.headers.get("retry-after"))
        error = PublishError(response.status_code, message, retry_after=retry_after)
        if response.status_code == 503 and retry_after is not None:
            raise _Retry(error)
        raise error

    def unreachable(self, error: httpx.TransportError) -> HubUnreachable:
        never_sent = isinstance(
            error, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
        )
        what = "could not connect to" if never_sent else "no answer from"
        return HubUnreachable(f"{what} the hub at {self.url}: {error!r}", maybe_applied=not never_sent)

    # Subscriptions.

    def mint(self, subscribe: Topics, publish: Topics, subject: str | None, expires_in: int) -> tuple[str, int]:
        if self.signer is None:
            raise HubError("minting tokens needs jwt_secret or jwt_private_key")
        return self.signer.mint(
            subscribe=topic_list(subscribe), publish=topic_list(publish), subject=subject, expires_in=expires_in
        )

    def events_url(self, topics: Topics, token: str | None, last_event_id: str | None) -> str:
        pairs = [("topic", topic) for topic in topic_list(topics)]
        if not pairs:
            raise ValueError("at least one topic")
        if token is not None:
            pairs.append(("token", token))
        if last_event_id is not None:
            pairs.append(("lastEventId", last_event_id))
        # Form encoding, as the hub decodes it; `/` and `*` kept readable.
        query = "&".join(f"{name}={quote(value, safe='/*')}" for name, value in pairs)
        return f"{self.public_url}/events?{query}"


class _Retry(Exception):
    """A 503 the hub asked to retry after ``error.retry_after`` seconds."""

    def __init__(self, error: PublishError) -> None:
        super().__init__(str(error))
        self.error = error


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None  # ssehub sends seconds; a date is not worth guessing about
    return min(float(value.strip()), MAX_RETRY_WAIT)


ClientT = TypeVar("ClientT", httpx.Client, httpx.AsyncClient)


class _HubBase(Generic[ClientT]):
    """What :class:`Hub` and :class:`AsyncHub` share: the arguments, and the
    methods that do no I/O."""

    def __init__(
        self,
        url: str,
        *,
        public_url: str | None = None,
        publish_token: str | None = None,
        jwt_secret: Key | None = None,
        jwt_private_key: Key | None = None,
        jwt_algorithm: str | None = None,
        jwt_audience: str | None = None,
        jwt_issuer: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        json_dumps: JsonDumps = dumps_compact,
        client: ClientT | None = None,
    ) -> None:
        self._core = _Core(
            url,
            public_url=public_url,
            publish_token=publish_token,
            jwt_secret=jwt_secret,
            jwt_private_key=jwt_private_key,
            jwt_algorithm=jwt_algorithm,
            jwt_audience=jwt_audience,
            jwt_issuer=jwt_issuer,
            retries=retries,
            json_dumps=json_dumps,
        )
        self._owns_client = client is None
        self._client: ClientT = client if client is not None else self._new_client(timeout)

    def _new_client(self, timeout: float) -> ClientT:
        raise NotImplementedError

    @property
    def url(self) -> str:
        """Where this process reaches the hub."""
        return self._core.url

    @property
    def public_url(self) -> str:
        """Where browsers reach the hub (:meth:`events_url` uses it)."""
        return self._core.public_url

    def subscribe_token(
        self,
        topics_or_patterns: Topics,
        *,
        subject: str | None = None,
        expires_in: int = 3600,
        publish: Topics = (),
    ) -> str:
        """A JWT granting subscription to these topics and patterns (and
        publishing to ``publish``), valid for ``expires_in`` seconds."""
        return self._core.mint(topics_or_patterns, publish, subject, expires_in)[0]

    def mint_token(
        self, *, subscribe: Topics = (), publish: Topics = (), subject: str | None = None, expires_in: int = 3600
    ) -> tuple[str, int]:
        """A JWT with these grants, and its ``exp`` (Unix seconds)."""
        return self._core.mint(subscribe, publish, subject, expires_in)

    def events_url(self, topics: Topics, *, token: str | None = None, last_event_id: str | None = None) -> str:
        """The ``/events`` URL for these topics on one connection, encoded as the hub decodes it."""
        return self._core.events_url(topics, token, last_event_id)


class Hub(_HubBase[httpx.Client]):
    """A publisher for one ssehub (synchronous; see :class:`AsyncHub`).

    ``url`` is where this process reaches the hub; ``public_url`` (default
    ``url``) is where browsers do, used by :meth:`events_url`. Credentials:
    ``publish_token`` (the hub's ``--publish-token``), or a JWT key
    (``jwt_secret`` for ``--jwt-secret``, ``jwt_private_key`` for
    ``--jwt-public-key``; ``jwt_algorithm``, ``jwt_audience``, ``jwt_issuer``)
    from which publish tokens are minted and :meth:`subscribe_token` mints
    subscriber tokens; with neither, the hub accepts publishes from loopback
    only. ``timeout`` is per request (seconds), ``retries`` the retries after
    a 503, ``json_dumps`` encodes non-string ``data``. Pass ``client`` to
    share an ``httpx.Client`` (it is then not closed).
    """

    def _new_client(self, timeout: float) -> httpx.Client:
        return httpx.Client(timeout=timeout)

    def publish(self, topic: Topics, data: object, *, event: str | None = None, retry: int | None = None) -> str:
        """Publishes one event to one topic or several; returns its id.

        ``data`` is sent as it is if it is a string, else as its JSON text.
        Raises :class:`PublishError` if the hub refuses it, :class:`HubUnreachable`
        if there was no answer.
        """
        return self._send(self._core.publish_request(topic, data, event, retry))[0]

    def publish_many(self, events: Iterable[Mapping[str, Any]]) -> list[str]:
        """Publishes a batch, all or nothing: each item a dict with the keys
        of the hub's JSON publish object (``topic``, ``data``, ``event``,
        ``retry``). Returns the ids, in order."""
        return self._send(self._core.batch_request(events))

    def disconnect(self, subject: str) -> int:
        """Ends every open stream whose token has ``sub == subject``
        (``ssehub-expired`` with reason ``revoked``); returns how many.
        Needs credentials that cover every topic."""
        return int(self._send(self._core.disconnect_request(subject))[0])

    def _send(self, request: _Request) -> list[str]:
        for attempt in range(self._core.retries + 1):
            try:
                response = self._client.post(
                    self._core.url + request.path, content=request.content, headers=self._core.headers()
                )
            except httpx.TransportError as e:
                raise self._core.unreachable(e) from e
            try:
                return self._core.answer(request, response)
            except _Retry as retry:
                if attempt == self._core.retries:
                    raise retry.error from None
                time.sleep(retry.error.retry_after or 0)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncHub(_HubBase[httpx.AsyncClient]):
    """:class:`Hub` for ``asyncio``: the same arguments and methods, ``async``
    where they talk to the hub. Pass ``client`` to share an ``httpx.AsyncClient``."""

    def _new_client(self, timeout: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=timeout)

    async def publish(
        self, topic: Topics, data: object, *, event: str | None = None, retry: int | None = None
    ) -> str:
        """See :meth:`Hub.publish`."""
        return (await self._send(self._core.publish_request(topic, data, event, retry)))[0]

    async def publish_many(self, events: Iterable[Mapping[str, Any]]) -> list[str]:
        """See :meth:`Hub.publish_many`."""
        return await self._send(self._core.batch_request(events))

    async def disconnect(self, subject: str) -> int:
        """See :meth:`Hub.disconnect`."""
        return int((await self._send(self._core.disconnect_request(subject)))[0])

    async def _send(self, request: _Request) -> list[str]:
        for attempt in range(self._core.retries + 1):
            try:
                response = await self._client.post(
                    self._core.url + request.path, content=request.content, headers=self._core.headers()
                )
            except httpx.TransportError as e:
                raise self._core.unreachable(e) from e
            try:
                return self._core.answer(request, response)
            except _Retry as retry:
                if attempt == self._core.retries:
                    raise retry.error from None
                await asyncio.sleep(retry.error.retry_after or 0)
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> AsyncHub:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
