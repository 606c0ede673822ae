"""The Grafana dashboard and the alert rules use the metrics docs/operations.md lists, which are
the ones dj_cqrs exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.test import override_settings

from dj_cqrs import metrics
from tests.unit.conftest import cqrs_with

DOCS = Path(__file__).resolve().parents[3] / "docs"
SUFFIXES = ("_bucket", "_sum", "_count")


def _names(text: str) -> set[str]:
    found = set()
    for name in re.findall(r"\bcqrs_[a-z_]+", text):
        for suffix in SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        if name != "cqrs_id":
            found.add(name)
    return found


def _documented() -> set[str]:
    section = (
        (DOCS / "operations.md")
        .read_text(encoding="utf-8")
        .split("## Metrics", 1)[1]
        .split("\n## ", 1)[0]
    )
    return set(re.findall(r"^\| `(cqrs_[a-z_]+)` \|", section, re.M))


@pytest.mark.django_db
def test_documented_metrics_are_the_exported_ones():
    with override_settings(CQRS=cqrs_with(metrics=True)):
        text = metrics.exposition([metrics.OutboxCollector(lambda: [])])[0].decode()
    metrics.reset()
    exported = {
        n for n in re.findall(r"^# TYPE (cqrs_[a-z_]+) ", text, re.M) if not n.endswith("_created")
    }
    # counters are typed without their _total suffix
    exported = {f"{n}_total" if f"{n}_total" in text else n for n in exported}
    assert _documented() == exported


def test_dashboard_and_alerts_use_documented_metrics():
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    text = (DOCS / "prometheus-alerts.yml").read_text(encoding="utf-8")
    alerts = " ".join(re.findall(r"^\s*expr: (.+)$", text, re.M))
    documented = _documented()
    assert _names(exprs) <= documented
    assert _names(alerts) <= documented
    assert len(_names(exprs)) >= 10  # the dashboard plots (nearly) all of them
    for topic in (
        "cqrs_outbox_oldest_pending_seconds",
        "cqrs_replica_lag_seconds",
        "cqrs_dead_letters_total",
    ):
        assert topic in _names(alerts)
