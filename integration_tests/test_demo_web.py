"""``make demo-web`` in a real browser: Playwright drives Debian's Chromium through the page.

The demo starts as a user starts it (``examples/demo_web.py``, the entry point of ``make
demo-web``, on the embedded default: SQLite and the server-less ``filesystem://`` broker), in a
subprocess; the test reads the one URL it prints, then, in the page:

1. edits a product on the master and waits for the replica's copy to show it (name, price,
   revision), and for the event's line to reach "applied";
2. pauses the consumer, edits a product and adds one with the keyboard, sees the events stop in
   the broker while the replica stays as it was, resumes, and sees both changes arrive;
3. cuts the broker, edits a product, sees the event kept in the master's outbox (outbox pending),
   restores the broker and sees the change arrive;
4. deletes a product and sees it leave the replica; adds 1,000 products in one bulk_create and
   sees the replica count them; raises every price in one bulk_update and sees the replica match;
5. sends a malformed message, sees it dead-lettered with its reason, replays it, discards it;

and keeps screenshots of the page in ``.cache/artifacts/`` (``demo-web.png`` at the end,
``demo-web-broker-cut.png`` and ``demo-web-dead-letter.png`` on the way; the paths are printed).
The same runs on RabbitMQ and PostgreSQL (``DEMO_BROKER_URL``, ``DEMO_DATABASE_URL``), skipped
when they are down, except under ``CI=true``.
Without Playwright or ``/usr/bin/chromium`` the test is skipped, and fails under ``CI=true``
(``.ci/run`` installs Chromium from the OS packages).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration_tests.harness import PG_HOST, PG_PORT, RABBIT_HOST, RABBIT_PORT, in_ci, require

ROOT = Path(__file__).resolve().parent.parent
DEMO_WEB = ROOT / "examples" / "demo_web.py"
CHROMIUM = Path(os.environ.get("DEMO_WEB_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / ".cache" / "artifacts"
URL = re.compile(r"^open (http://127\.0\.0\.1:\d+/)$")

#: Every visible element with text of its own whose contrast with its background (the first
#: opaque one up the tree) is below WCAG AA (4.5:1; 3:1 for large text), as "text (ratio)".
LOW_CONTRAST_JS = """
() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.offsetParent || el.closest(".sr-only, :disabled, .flash")) continue;
    const style = getComputedStyle(el);
    const [a, b] = [lum(rgb(style.color)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const large = parseFloat(style.fontSize) >= 24 || (parseFloat(style.fontSize) >= 18.5 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) low.push(`${el.textContent.trim().slice(0, 40)} (${ratio.toFixed(2)})`);
  }
  return low;
}
"""


def need_browser() -> None:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -r requirements/browser.txt)")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        message = "the browser test needs " + " and ".join(missing)
        if in_ci():
            pytest.fail(message + " - CI=true requires it", pytrace=False)
        pytest.skip(message)


class DemoWeb:
    """``examples/demo_web.py`` in a subprocess, its output collected by a thread."""

    def __init__(self, workdir: Path, **demo_env: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEMO_")}
        env.update(demo_env)
        self.workdir = workdir
        self.name = "embedded"
        self.lines: list[str] = []
        self.url: str | None = None
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, str(DEMO_WEB), "--port", "0", "--workdir", str(workdir)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            found = URL.match(line.strip())
            if found:
                self.url = found.group(1)
                self.ready.set()
        self.ready.set()

    def output(self) -> str:
        logs = []
        for log in sorted(self.workdir.glob("*.log")):
            tail = log.read_text(errors="replace").strip().splitlines()[-15:]
            logs.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(self.lines) + "\n" + "\n".join(logs)

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                return None
        return self.process.returncode


@pytest.fixture(params=["embedded", "rabbitmq-postgres"])
def demo_web(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DemoWeb]:
    """The demo on the embedded default, and on RabbitMQ and PostgreSQL (as ``DEMO_BROKER_URL``
    and ``DEMO_DATABASE_URL`` set it up: through the demo's TCP proxy, on two new databases)."""
    need_browser()
    env: dict[str, str] = {}
    if request.param == "rabbitmq-postgres":
        require(RABBIT_HOST, RABBIT_PORT, "RabbitMQ")
        require(PG_HOST, PG_PORT, "PostgreSQL")
        env = {
            "DEMO_BROKER_URL": f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/%2F",
            "DEMO_DATABASE_URL": f"postgres://postgres@{PG_HOST}:{PG_PORT}/",
        }
    demo = DemoWeb(tmp_path / "demo-web", **env)
    demo.name = request.param
    try:
        started = time.monotonic()
        demo.ready.wait(90)
        assert demo.url is not None, f"no URL printed within 90 s:\n{demo.output()}"
        print(f"demo-web served {demo.url} after {time.monotonic() - started:.1f}s")
        yield demo
    finally:
        code = demo.stop()
    assert code == 0, f"examples/demo_web.py exited with {code} after SIGTERM:\n{demo.output()}"
    assert demo.lines[-1] == "stopped", demo.output()


def test_demo_web_in_chromium(demo_web: DemoWeb) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if demo_web.name == "embedded" else f"-{demo_web.name}"
    screenshot = ARTIFACTS / f"demo-web{suffix}.png"
    shots: list[Path] = []
    timings: dict[str, float] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(20_000)
        expect.set_options(timeout=20_000)
        # What the browser reports as broken: a script error, or a resource that is not there
        # (a 404, such as the /favicon.ico Chromium asks for by itself) or fails (a 500). A 400
        # is the API answering a bad value, which the page shows on its field; a 503 the API
        # answering while the broker is cut (the page shows it unreachable).
        expected = ("with a status of 400 ", "with a status of 503 ")
        browser_errors: list[str] = []
        page.on("pageerror", lambda exc: browser_errors.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: browser_errors.append(f"console error: {msg.text} {msg.location['url']}")
            if msg.type == "error" and not any(status in msg.text for status in expected)
            else None,
        )

        def master(pk: int, column: str = "name"):  # type: ignore[no-untyped-def]
            return page.locator(f'#master-table tr[data-id="{pk}"] td.c-{column}')

        def replica(pk: int, column: str = "name"):  # type: ignore[no-untyped-def]
            return page.locator(f'#replica-table tr[data-id="{pk}"] td.c-{column}')

        def event(pk: int, revision: int):  # type: ignore[no-untyped-def]
            return page.locator(f'#flow li[data-pk="{pk}"][data-revision="{revision}"]')

        def mark(step: str, since: float) -> None:
            timings[step] = round(time.monotonic() - since, 2)

        try:
            t = time.monotonic()
            page.goto(demo_web.url or "")
            expect(page).to_have_title(re.compile("dj_cqrs live demo"))
            expect(replica(2)).to_have_text("Desk lamp")
            expect(page.locator("#sync-summary")).to_have_text(
                "All 6 rows in sync with the master."
            )
            mark("page loaded, replica shown", t)

            # Accessible: every text meets WCAG AA contrast; a bad value is announced on its field.
            assert page.evaluate(LOW_CONTRAST_JS) == []
            page.get_by_role("button", name="Add product").click()
            expect(page.get_by_role("alert").filter(has_text="Name: enter a name.")).to_be_visible()
            expect(page.get_by_label("Name")).to_have_attribute("aria-invalid", "true")
            expect(page.get_by_label("Name")).to_be_focused()

            # 1. An edit on the master reaches the replica.
            t = time.monotonic()
            page.get_by_role("button", name="Edit product 2, Desk lamp").click()
            name, price = page.get_by_label("Name"), page.get_by_label("Price")
            expect(name).to_be_focused()
            name.fill("Desk lamp (brass)")
            price.fill("44.50")
            page.get_by_role("button", name="Save changes").click()
            expect(master(2)).to_have_text("Desk lamp (brass)")
            expect(replica(2)).to_have_text("Desk lamp (brass)")
            expect(replica(2, "price")).to_have_text("44.50")
            expect(replica(2, "revision")).to_have_text("1")
            expect(event(2, 1)).to_have_attribute("data-stage", "applied")
            mark("edit reached the replica", t)

            # 2. Consumer paused: changes wait in the broker, then arrive on resume.
            t = time.monotonic()
            page.get_by_role("button", name="Pause consumer").click()
            expect(page.locator("#consumer-state")).to_have_text("stopped")
            page.get_by_role("button", name="Edit product 3, Office chair").click()
            name.fill("Office chair (mesh)")
            page.get_by_role("button", name="Save changes").click()
            expect(master(3)).to_have_text("Office chair (mesh)")
            name.click()  # a new product, with the keyboard only
            page.keyboard.type("Standing mat")
            page.keyboard.press("Tab")
            page.keyboard.type("29.00")
            page.keyboard.press("Enter")
            expect(master(7)).to_have_text("Standing mat")
            expect(event(3, 1)).to_have_attribute("data-stage", "published")
            expect(event(7, 0)).to_have_attribute("data-stage", "published")
            page.wait_for_timeout(1500)  # the consumer is really stopped: nothing arrives
            expect(replica(3)).to_have_text("Office chair")
            expect(page.locator('#replica-table tr[data-id="7"]')).to_have_attribute(
                "data-sync", "missing"
            )
            page.get_by_role("button", name="Resume consumer").click()
            expect(page.locator("#consumer-state")).to_have_text("running")
            expect(replica(3)).to_have_text("Office chair (mesh)")
            expect(replica(7)).to_have_text("Standing mat")
            expect(event(3, 1)).to_have_attribute("data-stage", "applied")
            mark("paused, changed, resumed, arrived", t)

            # 3. Broker cut: the event stays in the outbox, and arrives once restored.
            t = time.monotonic()
            page.get_by_role("button", name="Cut broker").click()
            expect(page.locator("#broker-state")).to_have_text("cut")
            page.get_by_role("button", name="Edit product 4, Bookshelf").click()
            name.fill("Bookshelf (walnut)")
            page.get_by_role("button", name="Save changes").click()
            expect(master(4)).to_have_text("Bookshelf (walnut)")
            expect(event(4, 1)).to_have_attribute("data-stage", "committed")
            expect(page.locator("#m-pending")).to_have_text("1")
            expect(replica(4)).to_have_text("Bookshelf")
            shots.append(ARTIFACTS / f"demo-web{suffix}-broker-cut.png")
            page.screenshot(path=str(shots[-1]), full_page=True)
            page.get_by_role("button", name="Restore broker").click()
            expect(page.locator("#broker-state")).to_have_text("connected")
            expect(replica(4)).to_have_text("Bookshelf (walnut)")
            expect(page.locator("#m-pending")).to_have_text("0")
            mark("cut, changed, restored, arrived", t)

            # 4. A delete, and 1,000 products in one bulk_create.
            t = time.monotonic()
            page.get_by_role("button", name="Delete product 6, Cable tray").click()
            expect(page.locator('#replica-table tr[data-id="6"]')).to_have_count(0)
            page.get_by_role("button", name="Add 1,000 products").click()
            expect(page.locator("#master-count")).to_contain_text("1,006 products")
            expect(page.locator("#replica-count")).to_have_text("1,006 copies", timeout=90_000)
            expect(page.locator("#sync-summary")).to_have_text(
                "All 1,006 rows in sync with the master."
            )
            mark("delete and 1,000-row bulk_create replicated", t)
            t = time.monotonic()
            page.get_by_role("button", name="Raise every price by 1.00").click()
            expect(page.locator("#notice")).to_have_text("Raised 1,006 prices in one bulk_update.")
            expect(replica(1, "price")).to_have_text("250.00", timeout=90_000)
            expect(replica(1, "revision")).to_have_text("1")
            expect(page.locator("#sync-summary")).to_have_text(
                "All 1,006 rows in sync with the master.", timeout=90_000
            )
            mark("1,006-row bulk_update replicated", t)

            # 5. A malformed message is dead-lettered with its reason; replay it, discard it.
            t = time.monotonic()
            page.get_by_role("button", name="Send a malformed message").click()
            letter = page.locator('#letters li[data-reason="missing_required_fields"]')
            expect(letter).to_have_count(1)
            expect(page.locator("#m-dead")).to_have_text("1")
            shots.append(ARTIFACTS / f"demo-web{suffix}-dead-letter.png")
            page.screenshot(path=str(shots[-1]), full_page=True)
            page.get_by_role("button", name="Replay dead letters").click()
            expect(page.locator("#notice")).to_have_text(re.compile(r"^Replayed 1 dead letter"))
            page.wait_for_timeout(1000)  # the consumer takes it again and dead-letters it again
            expect(page.locator("#m-dead")).to_have_text("1")  # (still malformed)
            expect(letter).to_have_count(1)
            page.get_by_role("button", name="Discard dead letters").click()
            expect(page.locator("#notice")).to_have_text(re.compile(r"^Discarded 1 dead letter"))
            expect(page.locator("#m-dead")).to_have_text("0")
            expect(page.locator("#letters")).to_have_text("No dead letters.")
            mark("dead letter sent, replayed, discarded", t)

            assert page.evaluate(LOW_CONTRAST_JS) == []
            assert browser_errors == []
            page.screenshot(path=str(screenshot), full_page=True)
        except Exception:
            failure = ARTIFACTS / f"demo-web{suffix}-failure.png"
            page.screenshot(path=str(failure), full_page=True)
            print(f"screenshot of the failure: {failure}")
            print(demo_web.output())
            raise
        finally:
            browser.close()
    print(f"screenshot: {screenshot} (and {', '.join(str(shot) for shot in shots)})")
    print("timings (s): " + ", ".join(f"{step} {seconds}" for step, seconds in timings.items()))
