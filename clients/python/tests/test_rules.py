"""The hub's rules as mirrored in Python: topics, patterns, coverage."""

from __future__ import annotations

import itertools

import pytest

from ssehub import Pattern
from ssehub._rules import covered, is_pattern, valid_topic


@pytest.mark.parametrize(
    ("topic", "valid"),
    [
        ("a", True),
        ("a" * 256, True),
        ("é" * 128, True),  # 256 bytes of UTF-8
        ("é" * 128 + "a", False),
        ("a" * 257, False),
        ("", False),
        ("a\nb", False),
        ("a\x7f", False),
        ("a\x85", False),  # C1 controls are control characters too
        ("a\udc80", False),  # a lone surrogate is not UTF-8
        ("a b/✓", True),
    ],
)
def test_valid_topic(topic: str, valid: bool) -> None:
    assert valid_topic(topic) is valid


def test_pattern_syntax() -> None:
    for bad in ["", "**/a", "a/**/b", "**/**", "a\n"]:
        with pytest.raises(ValueError):
            Pattern(bad)
    assert is_pattern("a/*") and is_pattern("**") and not is_pattern("a*b/**x")
    cases = [
        ("orders/*", "orders/1", True),
        ("orders/*", "orders", False),
        ("orders/*", "orders/", False),
        ("orders/*", "orders/1/items", False),
        ("team/7/**", "team/7/chat", True),
        ("team/7/**", "team/7/a/b", True),
        ("team/7/**", "team/7/", True),
        ("team/7/**", "team/7", False),
        ("a*b", "a*b", True),
        ("a*b", "axb", False),
    ]
    for pattern, topic, want in cases:
        assert Pattern(pattern).matches(topic) is want, (pattern, topic)


def topics_up_to(length: int) -> list[str]:
    """Every topic of 1..length segments over a small alphabet (empty segments included)."""
    segments = ["", "a", "b"]
    return ["/".join(parts) for n in range(1, length + 1) for parts in itertools.product(segments, repeat=n)]


PATTERNS = sorted({"/".join(parts) for n in (1, 2, 3) for parts in itertools.product(["a", "", "*", "**"], repeat=n)})


def test_coverage_agrees_with_a_brute_force() -> None:
    """covers(g, s) must hold exactly when every topic s matches (up to 5
    segments, enough to tell patterns of 3 apart) is matched by g."""
    universe = topics_up_to(5)
    parsed = []
    for text in PATTERNS:
        try:
            parsed.append(Pattern(text))
        except ValueError:
            continue
    matched = {p.text: {t for t in universe if p.matches(t)} for p in parsed}
    for grant in parsed:
        for sub in parsed:
            brute = matched[sub.text] <= matched[grant.text]
            assert grant.covers(sub) is brute, (grant, sub)
    assert covered([Pattern("user/42/**")], "user/42/inbox")
    assert not covered([Pattern("team/7")], "team/*")
    assert not covered([Pattern("**")], "")  # not a topic
