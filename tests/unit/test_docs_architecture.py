"""``docs/architecture.md`` agrees with the package and with the import contracts.

* the layer diagram is the layers contract of ``.importlinter``, line for line;
* every module the page names (``master.outbox.recording``, ``core.payload`` ...) exists, and
  every name in one (``replica.batch.handle_batch_through_outages``).
"""

from __future__ import annotations

import configparser
import importlib.util
import re
from pathlib import Path

from dj_cqrs import conf

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")

#: Top-level packages and modules of dj_cqrs whose submodules the page names as ``package.module``.
PACKAGES = ("core", "process", "transport", "master", "replica", "sync", "management", "controller")


def _contract_layers() -> list[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter", encoding="utf-8")
    raw = config["importlinter:contract:layers"]["layers"]
    return [" ".join(line.split()) for line in raw.splitlines() if line.strip() and not line.strip().startswith("#")]


def _diagram_layers() -> list[str]:
    diagram = PAGE.split("## Layers", 1)[1].split("```", 2)[1]
    layers = []
    for line in diagram.splitlines():
        # A layer's names, then (after two spaces or more) what it is; indented lines explain.
        if not line.strip() or line.startswith("        ") or line.strip().startswith("─"):
            continue
        layers.append(" ".join(re.split(r" {2,}", line.strip())[0].split()))
    return layers


def test_layer_diagram_is_the_layers_contract():
    assert _diagram_layers() == _contract_layers()


def _module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a dotted name under a module that is not a package
        return False


def test_every_module_named_exists():
    packages = "|".join(PACKAGES)
    named = set(re.findall(rf"`((?:{packages})(?:\.[A-Za-z_]+)+)", PAGE))
    assert len(named) > 30  # the page names the modules of every layer
    # ``master.publish_retries`` is a setting (``CQRS['master']['publish_retries']``), not a module.
    settings = {f"master.{key}" for key in conf.MASTER_OPTIONS} | {f"replica.{key}" for key in conf.REPLICA_OPTIONS}
    wrong = []
    for name in sorted(named - settings):
        # ``package.module`` or ``package.module.attribute``: the module exists, and the attribute.
        parts = name.split(".")
        found = [n for n in range(len(parts), 1, -1) if _module("dj_cqrs." + ".".join(parts[:n]))]
        if not found:
            wrong.append(name)
            continue
        module = importlib.import_module("dj_cqrs." + ".".join(parts[: found[0]]))
        rest = parts[found[0] :]
        if rest and not hasattr(module, rest[0]):
            wrong.append(name)
    assert wrong == []
