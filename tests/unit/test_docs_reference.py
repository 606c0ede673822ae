"""The reference pages under ``docs/`` agree with the code they describe.

* ``docs/settings.md`` has a table row for every key of ``ROOT_OPTIONS``, ``MASTER_OPTIONS`` and
  ``REPLICA_OPTIONS`` with its default, and a row for every system-check id used in ``dj_cqrs/``;
* every relative link of the README and of the pages points to an existing file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dj_cqrs import conf

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows by the name in their first cell (``| `name` | ... |``)."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        match = re.match(r"^\| `([^`]+)` \|(.*)\|$", line)
        if match:
            rows.setdefault(match.group(1), [c.strip() for c in match.group(2).split("|")])
    return rows


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    following = text.find("\n## ", start + len(heading))
    return text[start : following if following != -1 else len(text)]


@pytest.mark.parametrize(
    ("heading", "options"),
    [
        ("## Top level", conf.ROOT_OPTIONS),
        ('## `CQRS["master"]', conf.MASTER_OPTIONS),
        ('## `CQRS["replica"]', conf.REPLICA_OPTIONS),
        ('## `CQRS["events"]', conf.EVENTS_OPTIONS),
        ('## `CQRS["http"]', conf.HTTP_OPTIONS),
        ('## `CQRS["webhooks"]', conf.WEBHOOKS_OPTIONS),
        ('## `CQRS["audit"]', conf.AUDIT_OPTIONS),
    ],
)
def test_settings_page_lists_every_key_with_its_default(heading, options):
    rows = _rows(_section((DOCS / "settings.md").read_text(encoding="utf-8"), heading))
    assert set(rows) == set(options), "docs/settings.md and dj_cqrs/conf.py list different keys"
    for key, option in options.items():
        default_cell = rows[key][0]
        assert default_cell.startswith(f"`{option.default!r}`".replace("'", '"')) or default_cell.startswith(
            f"`{option.default!r}`"
        ), f"{key}: the page says {default_cell}, the code {option.default!r}"


def test_settings_page_lists_every_check_id():
    used = set()
    for path in (ROOT / "dj_cqrs").rglob("*.py"):
        used.update(re.findall(r"dj_cqrs\.[EW]\d{3}", path.read_text(encoding="utf-8")))
    rows = _rows(_section((DOCS / "settings.md").read_text(encoding="utf-8"), "## System checks"))
    assert used, "no check id found in the code"
    assert used == set(rows)


def _links(path: Path) -> list[tuple[str, str]]:
    """``(file, anchor)`` of the relative links of a page (file ``""``: the page itself)."""
    found = re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", path.read_text(encoding="utf-8"))
    return [(target, anchor) for target, anchor in found if "://" not in target]


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


@pytest.mark.parametrize("page", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target, anchor in _links(page):
        path = page.parent / target if target else page
        assert path.exists(), f"{page.name} links to missing {target}"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{page.name} links to missing anchor {target}#{anchor}"
