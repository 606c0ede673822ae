"""docs/getting-started.md, followed literally on the real RabbitMQ.

Every fenced block of the tutorial is handled here, in the page's order: shell blocks are run
with bash (``python`` and ``django-admin`` are this virtualenv's), Python blocks titled with a
path are written to that file (or appended, "add at the end"), the ``manage.py shell`` blocks are
run with ``shell -c``, and the two "keep it running" blocks are started in the background. The
one change to the page's code: the exchange and the replica queue get names of their own, so that
parallel runs do not share them (appended to the settings after the page's own lines).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration_tests.harness import (
    OUR_PYTHON,
    ROOT,
    rabbit_cleanup,
    stop_process,
    unique,
    wait_until,
)

PAGE = ROOT.parent / "docs" / "getting-started.md"
FENCE = re.compile(r'^```(\w*)(?: title="([^"]*)")?\n(.*?)^```', re.S | re.M)
APPEND = " (add at the end)"


def _blocks() -> list[tuple[str, str, str]]:
    return FENCE.findall(PAGE.read_text(encoding="utf-8"))


class Tutorial:
    def __init__(self, workdir: Path, exchange: str, queue: str) -> None:
        self.workdir = workdir
        self.exchange = exchange
        self.queue = queue
        self.background: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
        self.env["PATH"] = f"{Path(OUR_PYTHON).parent}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["PYTHONUNBUFFERED"] = "1"

    def bash(self, script: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd or self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, (
            f"{script}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
        return result

    def start(self, title: str, script: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{len(self.background)}.log").open("wb")
        lines = script.strip().splitlines()
        lines[-1] = (
            f"exec {lines[-1]}"  # the command itself gets the signals and gives the exit code
        )
        process = subprocess.Popen(
            ["bash", "-c", "\n".join(lines)],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process.log_path = log.name  # type: ignore[attr-defined]
        self.background[title] = process
        return process

    def log(self, title: str) -> str:
        return Path(self.background[title].log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def write(self, title: str, code: str) -> None:
        path = self.workdir / title.removesuffix(APPEND)
        assert path.parent.is_dir(), f"{path.parent} should exist by now (the page's order)"
        if title.endswith(APPEND):
            assert path.exists(), f"{path} should exist: the page adds to it"
            overrides = f'\nCQRS["exchange"] = "{self.exchange}"\n'
            if "queue" in code:
                overrides += f'CQRS["queue"] = "{self.queue}"\n'
            with path.open("a", encoding="utf-8") as out:
                out.write("\n" + code + overrides)
        else:
            path.write_text(code, encoding="utf-8")

    def shell(self, project: str, code: str) -> str:
        """The last line the code prints (Django 5.2's shell may first say what it imported)."""
        result = self.bash(f"python manage.py shell -c {_quote(code)}", cwd=self.workdir / project)
        return result.stdout.strip().splitlines()[-1]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


@pytest.fixture
def tutorial(rabbitmq: None, tmp_path: Path) -> Iterator[Tutorial]:
    run = unique("it_tutorial")
    tour = Tutorial(tmp_path, f"cqrs_{run}", f"storefront_{run}")
    try:
        yield tour
    finally:
        for process in tour.background.values():
            stop_process(process)
        rabbit_cleanup(tour.exchange, [tour.queue, f"dead_letter_{tour.queue}"])


def _expected_log_lines(block: str) -> list[re.Pattern[str]]:
    """The page's sample of the consumer's output as patterns: any time, pid, queue name, and
    ``...`` for the rest of the line."""
    patterns = []
    for line in block.strip().splitlines():
        pattern = re.escape(line)
        pattern = re.sub(r"\d{4}\\-\d\d\\-\d\d\\ \d\d:\d\d:\d\d,\d{3}", r"\\S+ \\S+", pattern)
        pattern = re.sub(r"5243", r"\\d+", pattern).replace("queue=storefront", r"queue=\S+")
        pattern = pattern.replace(r"\.\.\.", ".*")
        patterns.append(re.compile(pattern))
    return patterns


def test_the_tutorial_from_start_to_end(tutorial: Tutorial) -> None:
    handled = []
    for language, title, code in _blocks():
        handled.append(title or language or "output")
        if title == "install":
            # This virtualenv is where the checkout is installed; the tutorial's projects use it.
            tutorial.bash('python -c "import dj_cqrs, django, pika, kombu"')
        elif language == "sh" and title in ("create the projects", "migrate"):
            tutorial.bash(code)
        elif language == "python" and title.endswith(".py") or title.endswith(APPEND):
            tutorial.write(title, code)
        elif title == "terminal 2: the consumer (keep it running)":
            tutorial.start(title, code)
            wait_until(
                lambda title=title: "CQRS consumer connected" in tutorial.log(title),
                timeout=60,
                message="the consumer to connect (and to say so, with the page's LOGGING)",
            )
        elif title == "terminal 3: the relay (keep it running)":
            tutorial.start(title, code)
        elif not language and not title:
            # the sample of the consumer's log lines: each one is there, with time, level, logger
            consumer_log = tutorial.log("terminal 2: the consumer (keep it running)")
            for pattern in _expected_log_lines(code):
                assert any(pattern.fullmatch(line) for line in consumer_log.splitlines()), (
                    f"no line of the consumer's output matches {pattern.pattern}:\n{consumer_log}"
                )
        elif title == "shop: python manage.py shell":
            assert tutorial.shell("shop", code) == "1 1"  # what the page says it prints
        elif title == "storefront: python manage.py shell":
            wait_until(
                lambda code=code: _replicated(tutorial, code),
                timeout=60,
                message="the replica to print what the page says",
            )
        elif title == "run the tests":
            result = tutorial.bash(code)
            assert result.stderr.count("\nOK") == 2, result.stderr
            assert "Ran 1 test" in result.stderr
        else:
            pytest.fail(
                f"docs/getting-started.md has a block this test does not run: {language} {title!r}"
            )

    assert handled.count("output") == 1
    assert len(handled) == 15

    consumer = tutorial.log("terminal 2: the consumer (keep it running)")
    for revision in (0, 1):  # the page: "CQRS applied: cqrs_id=product pk=1 revision=0 ..."
        line = rf"^\S+ \S+ INFO django-cqrs\.consumer: CQRS applied: cqrs_id=product pk=1 revision={revision} "
        assert re.search(line, consumer, re.M), consumer
    relay = tutorial.background["terminal 3: the relay (keep it running)"]
    assert relay.poll() is None, tutorial.log("terminal 3: the relay (keep it running)")
    assert stop_process(relay, signal.SIGTERM) == 0, tutorial.log(
        "terminal 3: the relay (keep it running)"
    )


def _replicated(tutorial: Tutorial, code: str) -> bool:
    try:
        return tutorial.shell("storefront", code) == "chair 45.00 1"
    except AssertionError:  # ProductRef.DoesNotExist until the consumer has applied the create
        return False
