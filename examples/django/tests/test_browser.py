"""The notifications example in headless Chromium (Debian's, through
Playwright; no browser download), against the hub that ``manage.py ssehub``
runs: the binary of the ``ssehub-server`` wheel when EXAMPLE_REQUIRE_WHEEL=1
(CI installs the wheel into a fresh venv for this test).

alice gets alice's notifications and the public feed live, never bob's; a
hand-made subscription to bob's topic with alice's token is refused (403);
a publish inside a rolled-back transaction delivers nothing. Every wait is
Playwright's auto-waiting or a polled condition, bounded by TIMEOUT.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Browser, Page, expect, sync_playwright

from notes.demo import DEMO_USERS, create_demo_users
from notes.models import Notification

HERE = Path(__file__).resolve().parents[1]
TIMEOUT = 10.0  # seconds
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# As the machine's notes advise: no sandbox as root, and no background
# networking, which a machine without internet access refuses noisily.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORDS = {username: password for username, password, _ in DEMO_USERS}
expect.set_options(timeout=TIMEOUT * 1000)


def read_line(stream: Any, timeout: float = TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
            raise AssertionError(f"no line from manage.py ssehub within {timeout} s (got {data!r})")
        chunk = os.read(stream.fileno(), 1)
        if not chunk:
            raise AssertionError(f"manage.py ssehub exited (got {data!r})")
        data += chunk
    return data.decode().strip()


@pytest.fixture
def hub(live_server: Any, settings: Any) -> Iterator[str]:
    """``manage.py ssehub`` on a free port, allowing the live server's origin;
    the live server's settings then point at it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SSEHUB_")}
    env |= {
        "HUB_LISTEN": "127.0.0.1:0",
        "HUB_CORS_ORIGIN": live_server.url,
        "HUB_ARGS": "--jwt-leeway 0",  # a stream ends right at its token's exp
        "DJANGO_SETTINGS_MODULE": "notifications.settings",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "ssehub"], cwd=HERE, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=None,
    )  # fmt: skip
    try:
        address = read_line(process.stdout).removeprefix("listening on ")
        running = os.readlink(f"/proc/{process.pid}/exe")
        if os.environ.get("EXAMPLE_REQUIRE_WHEEL") == "1":
            # exec'd in place: the pid is the hub, and the hub is the wheel's binary.
            assert running == str(Path(sysconfig.get_path("scripts")) / "ssehub"), running
        url = f"http://{address}"
        settings.SSEHUB = {**settings.SSEHUB, "URL": url, "PUBLIC_URL": url}
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(TIMEOUT) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            assert process.stdout is not None
            process.stdout.close()


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    # Playwright's sync API runs an event loop in this thread, so Django takes
    # this thread's (plainly synchronous) ORM calls for async code: allow them.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=TIMEOUT * 3000)
        yield chromium
        chromium.close()


def metric(hub: str, name: str) -> int:
    for line in httpx.get(f"{hub}/metrics").text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == name:
            return int(float(value))
    raise AssertionError(f"no metric {name}")


def wait_metric(hub: str, name: str, want: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while metric(hub, name) != want:
        assert time.monotonic() < deadline, f"{name} stuck at {metric(hub, name)}, want {want}"
        time.sleep(0.02)


def log_in(browser: Browser, base: str, username: str) -> Page:
    page = browser.new_context().new_page()
    page.set_default_timeout(TIMEOUT * 1000)
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORDS[username])
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    return page


def send(staff: Page, base: str, text: str, recipient: str = "", roll_back: bool = False) -> None:
    staff.goto(f"{base}/staff/")
    if recipient:
        staff.select_option("select[name=recipient]", recipient)
    staff.fill("input[name=text]", text)
    if roll_back:
        staff.check("input[name=roll_back]")
    staff.click("#send button[type=submit]")
    expect(staff.locator(".message")).to_contain_text(("rolled back, not sent: " if roll_back else "sent: ") + text)


@pytest.mark.django_db(transaction=True)
def test_live_notifications_in_chromium(live_server: Any, hub: str, browser: Browser, settings: Any) -> None:
    User = get_user_model()
    create_demo_users(User)  # the migration's users, flushed by earlier tests
    bob_id = User.objects.get(username="bob").pk
    base = live_server.url

    alice = log_in(browser, base, "alice")
    bob = log_in(browser, base, "bob")
    for page in (alice, bob):
        expect(page.locator("body")).to_have_attribute("data-sse", "open")
    # One connection per page, whatever its topics.
    wait_metric(hub, 'ssehub_connections{kind="subscriber"}', 2)

    staff = log_in(browser, base, "staff")
    send(staff, base, "hello alice", "alice")
    send(staff, base, "for bob only", "bob")
    send(staff, base, "news for everyone")

    expect(alice.locator("#mine li")).to_have_text(["hello alice"])
    expect(bob.locator("#mine li")).to_have_text(["for bob only"])
    for page in (alice, bob):
        expect(page.locator("#news li")).to_have_text(["news for everyone"])
    # bob's event was published before the news alice has received, and a
    # connection gets events in publish order: had it reached alice, it
    # would be on her page by now.
    expect(alice.locator("#mine li")).to_have_text(["hello alice"])

    # A rolled-back transaction publishes nothing; the next commit does.
    send(staff, base, "rolled back", "alice", roll_back=True)
    send(staff, base, "after the rollback", "alice")
    expect(alice.locator("#mine li")).to_have_text(["hello alice", "after the rollback"])
    assert not Notification.objects.filter(text="rolled back").exists()
    assert metric(hub, "ssehub_events_published_total") == 4

    # alice's token opens bob's topic neither through the token view nor by hand.
    refused = alice.evaluate(
        """async ([hub, bobTopic]) => {
            const view = await fetch("/sse/token?topic=" + encodeURIComponent(bobTopic));
            const { token } = await (await fetch("/sse/token")).json();
            const url = hub + "/events?topic=" + encodeURIComponent(bobTopic) + "&token=" + token;
            const direct = await fetch(url);
            const source = await new Promise((resolve) => {
                const es = new EventSource(url);
                es.onopen = () => { es.close(); resolve("opened"); };
                es.onerror = () => { resolve(es.readyState === EventSource.CLOSED ? "closed" : "retrying"); es.close(); };
            });
            return { view: view.status, direct: direct.status, body: await direct.text(), source };
        }""",
        [hub, f"user/{bob_id}/notifications"],
    )
    assert refused["view"] == 403
    assert refused["direct"] == 403 and "do not cover" in refused["body"], refused
    assert refused["source"] == "closed"  # EventSource gives up on a 403 for good
    assert metric(hub, 'ssehub_auth_failures_total{reason="forbidden"}') == 2

    # The page renders what is in the database, and the stream resumes after it.
    alice.reload()
    expect(alice.locator("body")).to_have_attribute("data-sse", "open")
    send(staff, base, "after a reload", "alice")
    expect(alice.locator("#mine li")).to_have_text(["hello alice", "after the rollback", "after a reload"])

    # A token running out: the hub ends the stream with ssehub-expired, the
    # page fetches a new token and resumes from its last id.
    settings.SSEHUB = {**settings.SSEHUB, "TOKEN_TTL": 2}
    alice.reload()
    expect(alice.locator("body")).to_have_attribute("data-sse", "open")
    deadline = time.monotonic() + TIMEOUT
    while metric(hub, "ssehub_streams_expired_total") < 1:
        assert time.monotonic() < deadline, "the short token's stream did not end"
        time.sleep(0.05)
    settings.SSEHUB = {**settings.SSEHUB, "TOKEN_TTL": 3600}
    send(staff, base, "after the token expired", "alice")
    expect(alice.locator("#mine li")).to_have_text(
        ["hello alice", "after the rollback", "after a reload", "after the token expired"]
    )
