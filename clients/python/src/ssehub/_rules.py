"""The hub's rules for topics, patterns and events, mirrored exactly.

:class:`ssehub.RedisHub` appends to the Redis stream without the hub looking
at the event first: a node that later reads an invalid entry can only skip it
and log it, and the publisher would never know. So every event is checked
here first, with the hub's own rules and messages (``crates/protocol``:
``topic.rs``, ``pattern.rs``, ``publish.rs``), in the hub's order, so the
first error named is the one the hub would name. The tests hold the two to
each other: each case is sent to the real hub over HTTP and checked here.

The pattern matcher and the grant coverage test are the hub's too; the Django
token view uses them to refuse, before minting, a topic its grants do not cover.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ._errors import PublishError

MAX_TOPICS = 64  # topics per connection or per event
MAX_TOPIC_LEN = 256  # UTF-8 bytes

TOPIC_MISSING = "at least one topic is required"
TOPIC_INVALID = "topics are 1-256 bytes of UTF-8 without control characters"
TOPIC_TOO_MANY = "at most 64 topics"
PATTERN_TOPIC = "a published topic may not have a segment that is exactly * or ** (that is a pattern)"
TOPIC_TYPE = "topic must be a string or an array of strings"
TOPICS_STRINGS = "topics must be strings"
DATA_REQUIRED = "data is required"
EVENT_INVALID = "event must be a string without CR, LF or NUL"
RETRY_INVALID = "retry must be a non-negative integer (milliseconds)"
EMPTY_BATCH = "empty batch"
ITEMS_OBJECTS = "batch items must be objects"
PATTERN_INVALID = "patterns are 1-256 bytes of UTF-8 without control characters"
DOUBLE_STAR_NOT_LAST = "`**` may only be the last segment of a pattern"

# Rust's char::is_control: general category Cc, C0 and C1.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_U64_MAX = 2**64 - 1

JsonDumps = Callable[[object], str]


def dumps_compact(value: object) -> str:
    """The default encoder for non-string ``data``: compact JSON, UTF-8 kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def valid_topic(topic: str) -> bool:
    """1-256 bytes of UTF-8 with no control character."""
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate is not UTF-8
        return False
    return 1 <= size <= MAX_TOPIC_LEN and _CONTROL.search(topic) is None


def is_pattern(topic: str) -> bool:
    """Whether a segment is exactly ``*`` or ``**``, which a publish refuses."""
    return any(segment in ("*", "**") for segment in topic.split("/"))


def _invalid(message: str) -> PublishError:
    return PublishError(400, message)


def _add_published_topic(topics: list[str], topic: str) -> None:
    if is_pattern(topic):
        raise _invalid(PATTERN_TOPIC)
    if not valid_topic(topic):
        raise _invalid(TOPIC_INVALID)
    if topic not in topics:
        if len(topics) == MAX_TOPICS:
            raise _invalid(TOPIC_TOO_MANY)
        topics.append(topic)


def _parse_u64(digits: str) -> int | None:
    if not 1 <= len(digits) <= 20 or not (digits.isascii() and digits.isdigit()):
        return None
    value = int(digits)
    return value if value <= _U64_MAX else None


@dataclass(frozen=True)
class Publication:
    """One event, checked: what ends up in a stream entry."""

    topics: tuple[str, ...]  # 1-64 distinct topics, in the order given
    data: str
    event: str | None
    retry: int | None  # milliseconds

    def fields(self) -> list[tuple[str, str]]:
        """The stream entry's fields, as the hub writes them for an HTTP publish."""
        fields = [("topic", topic) for topic in self.topics]
        fields.append(("data", self.data))
        if self.event is not None:
            fields.append(("event", self.event))
        if self.retry is not None:
            fields.append(("retry", str(self.retry)))
        return fields


def encode_data(data: object, dumps: JsonDumps) -> str | None:
    """``data`` as the text subscribers get: a string as it is, anything else
    as its JSON text; None stays None (the hub says data is required)."""
    if data is None or isinstance(data, str):
        return data
    return dumps(data)


def check(item: Mapping[str, object], dumps: JsonDumps = dumps_compact) -> Publication:
    """Checks one publish object (keys ``topic``, ``data``, ``event``,
    ``retry``; others ignored) exactly as the hub's JSON decoder does."""
    topics: list[str] = []
    topic = item.get("topic")
    if isinstance(topic, str):
        _add_published_topic(topics, topic)
    elif isinstance(topic, (list, tuple)):
        for one in topic:
            if not isinstance(one, str):
                raise _invalid(TOPICS_STRINGS)
            _add_published_topic(topics, one)
    elif topic is not None:
        raise _invalid(TOPIC_TYPE)
    data = encode_data(item.get("data"), dumps)
    event = item.get("event")
    if event is not None and not isinstance(event, str):
        raise _invalid(EVENT_INVALID)
    retry = _check_retry(item.get("retry"))
    if not topics:
        raise _invalid(TOPIC_MISSING)
    if data is None:
        raise _invalid(DATA_REQUIRED)
    if event is not None and any(c in event for c in "\r\n\0"):
        raise _invalid(EVENT_INVALID)
    return Publication(tuple(topics), data, event, retry)


def _check_retry(retry: object) -> int | None:
    if retry is None:
        return None
    # JSON true is not a number to the hub, though Python's bool is an int.
    if isinstance(retry, int) and not isinstance(retry, bool) and 0 <= retry <= _U64_MAX:
        return retry
    if isinstance(retry, str) and (parsed := _parse_u64(retry)) is not None:
        return parsed
    raise _invalid(RETRY_INVALID)


def check_batch(items: Sequence[object], dumps: JsonDumps = dumps_compact) -> list[Publication]:
    """Checks a batch as the hub does: all valid, or the first error."""
    if not items:
        raise _invalid(EMPTY_BATCH)
    checked = []
    for item in items:
        if not isinstance(item, Mapping):
            raise _invalid(ITEMS_OBJECTS)
        checked.append(check(item, dumps))
    return checked


class Pattern:
    """A subscription or grant pattern: ``*`` is one non-empty segment, a
    last segment ``**`` is one or more segments; any other ``*`` is literal."""

    _STAR = object()
    _DOUBLE_STAR = object()

    def __init__(self, pattern: str) -> None:
        if not valid_topic(pattern):
            raise ValueError(f"{PATTERN_INVALID}: {pattern!r}")
        parts = pattern.split("/")
        segments: list[object] = []
        for i, part in enumerate(parts):
            if part == "*":
                segments.append(self._STAR)
            elif part == "**" and i + 1 == len(parts):
                segments.append(self._DOUBLE_STAR)
            elif part == "**":
                raise ValueError(f"{DOUBLE_STAR_NOT_LAST}: {pattern!r}")
            else:
                segments.append(part)
        self.text = pattern
        self._segments = segments

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"

    def matches(self, topic: str) -> bool:
        """Whether ``topic`` is one of the topics this pattern matches."""
        parts = topic.split("/")
        for i, segment in enumerate(self._segments):
            if segment is self._DOUBLE_STAR:
                return len(parts) > i
            if i >= len(parts):
                return False
            if segment is self._STAR:
                if parts[i] == "":
                    return False
            elif parts[i] != segment:
                return False
        return len(parts) == len(self._segments)

    def _split_tail(self) -> tuple[list[object], bool]:
        if self._segments[-1] is self._DOUBLE_STAR:
            return self._segments[:-1], True
        return self._segments, False

    def covers(self, sub: Pattern) -> bool:
        """Whether every topic ``sub`` matches is matched by this (grant)
        pattern; the hub's exact, segment-by-segment test."""
        grant_fixed, grant_tail = self._split_tail()
        sub_fixed, sub_tail = sub._split_tail()
        if grant_tail:
            long_enough = len(sub._segments) > len(grant_fixed)
        else:
            long_enough = not sub_tail and len(sub_fixed) == len(grant_fixed)
        return long_enough and all(_segment_covers(g, s) for g, s in zip(grant_fixed, sub_fixed))


def _segment_covers(grant: object, sub: object) -> bool:
    if grant is Pattern._STAR:
        return sub is Pattern._STAR or (isinstance(sub, str) and sub != "")
    return isinstance(grant, str) and grant == sub


def covered(grants: Sequence[Pattern], topic: str) -> bool:
    """Whether some grant covers the subscription ``topic`` (a topic or a pattern)."""
    try:
        sub = Pattern(topic)
    except ValueError:
        return False
    return any(grant.covers(sub) for grant in grants)
