"""docs/settings.md lists every ``CQRS['status']`` key with its default; docs/operations.md and
docs/commands.md have the sections the ops code points to."""

from __future__ import annotations

import pytest

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


def test_management_commands_named_in_the_operations_docs_exist():
    """Every ``cqrs_*`` command and ``cqrs_dead_letters`` subcommand that docs/operations.md and
    the example alert rules tell an operator to run exists."""
    import re

    from django.core.management import get_commands, load_command_class

    texts = [
        (reference.DOCS / name).read_text(encoding="utf-8")
        for name in ("operations.md", "prometheus-alerts.yml")
    ]
    # a command: after "manage.py " or opening a code span, and not a metric or field name
    found = re.findall(r"(?:manage\.py |`)(cqrs_[a-z_]+)\b", "\n".join(texts))
    fields = (
        "_total",
        "_seconds",
        "_pending",
        "_workers",
        "_bucket",
        "_size",
        "_id",
        "_updated",
        "_revision",
    )
    run = {name for name in found if not name.endswith(fields)}
    assert {"cqrs_status", "cqrs_consume", "cqrs_relay", "cqrs_dead_letters"} <= run
    assert run <= set(get_commands()), run - set(get_commands())

    parser = load_command_class("dj_cqrs", "cqrs_dead_letters").create_parser(
        "manage.py", "cqrs_dead_letters"
    )
    [action] = [a for a in parser._actions if a.dest == "command"]
    used = {m.group(1) for text in texts for m in re.finditer(r"cqrs_dead_letters (\w+)", text)}
    assert used and used <= set(action.choices), used - set(action.choices)


@pytest.mark.django_db
def test_status_json_example_has_the_keys_of_the_real_output(transport):
    """docs/operations.md's ``cqrs_status --json`` example shows the keys ``Status.as_dict()``
    has, at every level."""
    import json
    import re

    from dj_cqrs.ops import status

    text = (reference.DOCS / "operations.md").read_text(encoding="utf-8")
    [block] = re.findall(r"```json\n(\{\"thresholds\".*?)```", text, flags=re.S)
    example = json.loads(block)
    real = status.collect().as_dict()
    assert set(example) == set(real)
    assert set(example["thresholds"]) == set(real["thresholds"])
    assert set(example["replica"]) == set(real["replica"])
    assert set(example["replica"]["queue"]) == set(real["replica"]["queue"])
