"""docs/settings.md lists every ``CQRS['status']`` key with its default; docs/operations.md and
docs/commands.md have the sections the ops code points to."""

from __future__ import annotations

from dj_cqrs import conf
from tests.unit import test_docs_reference as reference


def test_status_settings_are_documented():
    reference.test_settings_page_lists_every_key_with_its_default(
        '## `CQRS["status"]', conf.STATUS_OPTIONS
    )


def test_operations_and_commands_sections():
    operations = (reference.DOCS / "operations.md").read_text(encoding="utf-8")
    for heading in ("## Status and health probes", "## Admin", "## Read-your-writes"):
        assert heading in operations
    assert "## cqrs_status" in (reference.DOCS / "commands.md").read_text(encoding="utf-8")
