"""The code of the site's guide pages, run as tests.

* ``docs/coming-from.md``: each Python block is executed here as it is on the page, against the
  Quick start's models (``tests.apps.quickstart``), and what it promises is checked;
* ``docs/getting-started.md`` and the README's Quick start declare the models of
  ``tests.apps.quickstart`` (the examples of docs/testing.md run against those), and every block
  of the tutorial is one that ``integration_tests/test_getting_started.py`` runs;
* ``docs/events.md``: each Python block is executed against the models of ``tests.apps.eventsdoc``
  (the page's ``Order``, ``Payment``, ``LedgerEntry``, ``Challenge``);
* every ``CQRS = {...}`` example of the pages passes the system checks;
* ``docs/operations.md``: the read-your-writes middleware and decorator examples, end to end;
* ``docs/http.md``: the pull endpoint's urls and settings, the audit middleware order, and the
  plain-Python webhook receiver (served on a free port, sent signed and unsigned deliveries);
* the example of ``dj_cqrs.testing``'s docstring (shown in the API reference) runs;
* ``docs/concepts.md`` has no code to run (its one block is the lifecycle diagram).
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps

from dj_cqrs.events import registry, sources
from dj_cqrs.testing import use_memory_transport
from dj_cqrs.webhooks import sign
from tests.apps.quickstart import models as quickstart_models
from tests.apps.quickstart.models import Product, ProductRef

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

FENCE = re.compile(r'^```(\w*)(?: title="([^"]*)")?\n(.*?)^```', re.S | re.M)


def blocks(page: Path, language: str | None = None) -> list[tuple[str, str | None, str]]:
    """``(language, title, code)`` of the fenced blocks of a page, in order."""
    found = [
        (lang, title, code) for lang, title, code in FENCE.findall(page.read_text(encoding="utf-8"))
    ]
    return [b for b in found if language is None or b[0] == language]


def run(code: str, namespace: dict[str, Any]) -> dict[str, Any]:
    exec(compile(code, "<documentation example>", "exec"), namespace)  # noqa: S102 - our own pages
    return namespace


# -- docs/coming-from.md ----------------------------------------------------------------------------

COMING_FROM = DOCS / "coming-from.md"


def coming_from(*indexes: int) -> dict[str, Any]:
    """Run the page's Python blocks ``indexes`` in one namespace (a module of its own)."""
    code = [c for _, _, c in blocks(COMING_FROM, "python")]
    namespace: dict[str, Any] = {"__name__": "docs_coming_from"}
    for index in indexes:
        run(code[index], namespace)
    return namespace


@pytest.mark.django_db(transaction=True)
def test_from_outbox_pattern_emit_and_handler(mailoutbox):
    page = coming_from(0, 1)
    label = f"{page['__name__']}.tell_the_buyers"
    try:
        with use_memory_transport() as transport:
            product = Product.objects.create(name="chair", price="49.00")
            page["reprice"](product, Decimal("45.00"))
            transport.join(fail_fast=True)
    finally:
        registry.unregister(label)

    assert [event.name for event in transport.events] == ["product.repriced"]
    assert [mail.subject for mail in mailoutbox] == ["New price: 45.00"]
    assert mailoutbox[0].body == f"Product {product.pk}"
    # the same commit also replicated the row, as a model event
    assert ProductRef.objects.get(pk=product.pk).price == Decimal("45.00")


def test_from_pubsubpull_the_receiver_check():
    accept = coming_from(2)["accept"]
    body = b'{"signal_type": "SAVE", "cqrs_id": "product", "instance_pk": 1}'
    headers = sign(body, "s3cret")

    assert accept(body, headers, "s3cret") is True
    assert accept(body, headers, "another secret") is False
    assert accept(body.replace(b"SAVE", b"SYNC"), headers, "s3cret") is False
    assert accept(body, {}, "s3cret") is False


@pytest.mark.django_db(transaction=True)
def test_from_spark_event_source():
    page = coming_from(3, 4)
    config = page["CatalogConfig"]("tests.apps.quickstart", quickstart_models)
    config.apps = apps
    config.models = apps.get_app_config("quickstart").models
    try:
        config.ready()
        with use_memory_transport() as transport:
            lamp = Product.objects.create(name="lamp", price=Decimal("8.00"))
            lamp.name = "desk lamp"
            lamp.save()  # (name, key) already emitted: nothing new
            chair = Product.objects.create(name="chair", price=Decimal("49.00"))
    finally:
        sources.unregister_sources(Product)

    emitted = sorted((event.name, event.key) for event in transport.events)
    assert emitted == sorted(
        [
            ("product.listed", str(lamp.pk)),
            ("product.bargain", str(lamp.pk)),
            ("product.listed", str(chair.pk)),
        ]
    )


def test_every_block_of_coming_from_runs():
    """The tests above run every Python block of the page (read from their ``coming_from(...)``
    calls, so that a block added to the page without a test fails here)."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    run_by_tests = {
        arg.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "coming_from"
        for arg in node.args
        if isinstance(arg, ast.Constant)
    }
    assert run_by_tests == set(range(len(blocks(COMING_FROM, "python"))))


# -- the Quick start's models ------------------------------------------------------------------------


def _classes(code: str) -> dict[str, str]:
    """Source of each top-level class of a block."""
    tree = ast.parse(code)
    return {
        node.name: ast.get_source_segment(code, node) or ""
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    }


def test_the_quick_start_models_are_the_test_app_models():
    readme = ROOT / "README.md"
    tutorial = DOCS / "getting-started.md"
    declared: dict[str, list[str]] = {}
    for page in (readme, tutorial):
        for _, _, code in blocks(page, "python"):
            for name, source in _classes(code).items():
                if name in ("Product", "ProductRef"):
                    declared.setdefault(name, []).append(source)
    app = _classes(Path(quickstart_models.__file__).read_text(encoding="utf-8"))

    assert set(declared) == {"Product", "ProductRef"}
    for name, sources_of_pages in declared.items():
        assert len(sources_of_pages) == 2, (
            f"{name} should be declared by the README and the tutorial"
        )
        for source in sources_of_pages:
            assert textwrap.dedent(source) == app[name], (
                f"{name} differs from tests/apps/quickstart/models.py"
            )


def test_concepts_has_no_code_to_run():
    assert [lang for lang, _, _ in blocks(DOCS / "concepts.md")] == [""]


# -- the example of the API reference -------------------------------------------------------------


def test_the_example_of_dj_cqrs_testing_runs(transactional_db):
    """The module docstring of ``dj_cqrs.testing`` (shown on the API reference page) with the
    Quick start's models."""
    import dj_cqrs.testing

    docstring = dj_cqrs.testing.__doc__ or ""
    code = textwrap.dedent(
        docstring[docstring.index("    from dj_cqrs") : docstring.index("``transport.payloads``")]
    )
    namespace = run(code, {"Product": Product, "ProductRef": ProductRef})
    namespace["test_product_reaches_the_replica"](transactional_db)
    assert ProductRef.objects.get().price == Decimal("49.00")


# -- the settings examples of every page ------------------------------------------------------------


def _settings_examples() -> list[tuple[str, str]]:
    """``(page, code)`` of the Python blocks that set ``CQRS = {...}`` (``...`` standing for the
    rest of the user's settings)."""
    found = []
    for page in sorted(DOCS.glob("*.md")):
        for _, _, code in blocks(page, "python"):
            code = textwrap.dedent(code)
            if code.startswith("CQRS = {"):
                found.append((page.name, code))
    return found


@pytest.mark.parametrize(("page", "code"), _settings_examples(), ids=lambda value: value[:20])
def test_settings_examples_pass_the_system_checks(page, code, settings):
    from django.core import checks

    namespace = run(code.replace("    ...,\n", ""), {})
    # Over the test project's settings: it has replica models, so a master-only example (no
    # "queue") would be E006 here, and "..." stands for keys such as "transport".
    settings.CQRS = {**settings.CQRS, **namespace["CQRS"]}
    problems = [
        message
        for message in checks.run_checks(tags=["dj_cqrs"], include_deployment_checks=False)
        if message.id and message.id.startswith("dj_cqrs.") and message.level >= checks.WARNING
    ]
    assert problems == [], f"{page}: {code}"


def test_the_settings_examples_are_found():
    assert {page for page, _ in _settings_examples()} >= {
        "settings.md",
        "transports.md",
        "events.md",
    }


# -- docs/events.md ----------------------------------------------------------------------------------

EVENTS = DOCS / "events.md"


def events_page(*indexes: int, **names: Any) -> dict[str, Any]:
    """Run the Python blocks ``indexes`` of docs/events.md in one namespace, with ``names`` (the
    models and objects the page's fragments refer to) defined."""
    from tests.apps.eventsdoc import models as eventsdoc

    code = [c for _, _, c in blocks(EVENTS, "python")]
    namespace: dict[str, Any] = {
        "__name__": "docs_events",
        "Order": eventsdoc.Order,
        "Payment": eventsdoc.Payment,
        "LedgerEntry": eventsdoc.LedgerEntry,
        "Challenge": eventsdoc.Challenge,
        **names,
    }
    for index in indexes:
        run(code[index], namespace)
    return namespace


@pytest.fixture
def unregister_page_handlers() -> Iterator[None]:
    before = {h.name for h in registry.handlers()}
    yield
    for h in registry.handlers():
        if h.name not in before:
            registry.unregister(h.name)


@pytest.mark.django_db(transaction=True)
def test_events_emit_and_handle(unregister_page_handlers):
    from tests.apps.eventsdoc.models import Order, Payment

    order = Order.objects.create(total=Decimal("10.00"))
    with use_memory_transport() as transport:
        events_page(1)  # registers record_payment
        events_page(0, order=order)  # emits order.paid in the transaction that marks it paid
        transport.join(fail_fast=True)

    assert Order.objects.get().status == "paid"
    assert transport.events[0].data == {"total": "10.00", "currency": "EUR"}
    assert Payment.objects.get(order_id=order.pk).total == Decimal("10.00")


def test_events_the_signature_of_emit():
    import inspect

    from dj_cqrs.events import emit

    (shown,) = [
        c.strip() for _, _, c in blocks(EVENTS, "python") if c.startswith("dj_cqrs.events.emit(")
    ]
    parameters = []
    for parameter in inspect.signature(emit).parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY and "*" not in parameters:
            parameters.append("*")
        default = "" if parameter.default is parameter.empty else f"={parameter.default!r}"
        parameters.append(f"{parameter.name}{default}")
    assert shown == f"dj_cqrs.events.emit({', '.join(parameters)}) -> str"


@pytest.mark.django_db(transaction=True)
def test_events_sources_handlers_and_the_testing_example(unregister_page_handlers):
    from datetime import date, timedelta

    from django.apps import AppConfig

    from tests.apps.eventsdoc import models as eventsdoc

    sent: list[tuple[Any, ...]] = []
    # the page's send_mail(...) stands for a real call: recorded here
    page = events_page(3, 4, 6, AppConfig=AppConfig, send_mail=lambda *args: sent.append(args))

    config = page["ChallengesConfig"]("tests.apps.eventsdoc", eventsdoc)
    config.apps = apps
    config.models = apps.get_app_config("eventsdoc").models
    try:
        config.ready()
        # the page's own test: emit order.paid, join, the ledger has it
        page["test_paid_orders_reach_the_ledger"]()
        with use_memory_transport() as transport:
            challenge = eventsdoc.Challenge.objects.create(
                title="Run 5k", end_date=date.today() + timedelta(days=1)
            )
            transport.join(fail_fast=True)
    finally:
        sources.unregister_sources(eventsdoc.Challenge)

    assert [event.name for event in transport.events] == [
        "challenge.created",
        "challenge.ends_soon",
    ]
    challenge.refresh_from_db()
    assert challenge.state == "challenge.ends_soon"  # the ordered projection saw both, in order
    assert eventsdoc.LedgerEntry.objects.get().kind == "order.paid"
    assert len(sent) == 1  # notify (order.*) ran for order.paid


def test_every_python_block_of_events_is_run():
    """Blocks 0, 1, 3, 4, 6 run above, block 2 is the signature of emit() (compared above),
    block 5 a settings example (``test_settings_examples_pass_the_system_checks``)."""
    code = [c for _, _, c in blocks(EVENTS, "python")]
    assert len(code) == 7
    assert code[2].startswith("dj_cqrs.events.emit(")
    assert code[5].startswith("CQRS = {")


# -- docs/operations.md: read-your-writes -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_read_your_writes_middleware_and_decorator():
    from django.http import HttpResponse
    from django.test import RequestFactory
    from django.utils.module_loading import import_string

    from dj_cqrs.ops.read_your_writes import wait_for_revision

    master_block, replica_block = [
        c
        for _, _, c in blocks(DOCS / "operations.md", "python")
        if c.startswith("MIDDLEWARE = [...,")
    ]

    created_pks = []

    def create(request):
        created_pks.append(Product.objects.create(name="chair", price="49.00").pk)
        return HttpResponse(status=201)

    def show(request, pk):
        return HttpResponse(
            ProductRef.objects.filter(pk=pk).values_list("name", flat=True).first() or ""
        )

    master = run(master_block, {})["MIDDLEWARE"]
    # the page's view body is "...": here it shows the replica's row
    view = "def order_detail(request, pk): ..."
    assert view in replica_block
    replica = run(
        replica_block.replace(view, "def order_detail(request, pk): return show(request, pk)"),
        {"wait_for_revision": wait_for_revision, "show": show},
    )
    assert master[0] is Ellipsis and replica["MIDDLEWARE"][0] is Ellipsis  # "the rest of yours"
    header_middleware = import_string(master[1])
    wait_middleware = import_string(replica["MIDDLEWARE"][1])

    factory = RequestFactory()
    with use_memory_transport() as transport:
        created = header_middleware(create)(factory.post("/products/"))
        token = created["X-CQRS-Revision"]
        (pk,) = created_pks
        assert token == f"product:{pk}:0"  # the page: X-CQRS-Revision: <cqrs_id>:<pk>:<revision>

        request = factory.get(f"/products/{pk}", HTTP_X_CQRS_REVISION=token)
        stale = wait_middleware(lambda request: show(request, pk))(request)
        assert stale["X-CQRS-Stale"] == "1"  # not applied in time: served anyway, and said so
        assert stale.content == b""

        transport.join()
        fresh = replica["order_detail"](
            factory.get(f"/products/{pk}", HTTP_X_CQRS_REVISION=token), pk
        )
        assert "X-CQRS-Stale" not in fresh
        assert fresh.content == b"chair"


# -- docs/http.md ----------------------------------------------------------------------------------

HTTP = DOCS / "http.md"


def _http_block(start: str) -> str:
    (code,) = [c for _, _, c in blocks(HTTP, "python") if c.startswith(start)]
    return code


def test_http_serving_the_pull_endpoint(settings, monkeypatch):
    import os

    from django.core import checks
    from django.urls import URLResolver, include, path

    monkeypatch.setenv("CQRS_PULL_TOKEN", "t0ken")
    page = run(
        _http_block("# urls.py").replace("    ...,\n", ""),
        {"path": path, "include": include, "os": os},
    )
    (resolver,) = page["urlpatterns"]
    assert (
        isinstance(resolver, URLResolver) and resolver.url_patterns
    )  # dj_cqrs.urls imports and has views
    settings.CQRS = {**settings.CQRS, **page["CQRS"]}
    assert settings.CQRS["http"] == {"tokens": ["t0ken"]}
    errors = [
        m
        for m in checks.run_checks(tags=["dj_cqrs"])
        if (m.id or "").startswith("dj_cqrs.") and m.level >= checks.WARNING
    ]
    assert errors == []


def test_http_the_audit_middleware_setting():
    from django.utils.module_loading import import_string

    middleware = run(_http_block("MIDDLEWARE = ["), {})["MIDDLEWARE"]
    for dotted in middleware:
        import_string(dotted)
    names = [dotted.rsplit(".", 1)[-1] for dotted in middleware]
    assert names.index("AuditMiddleware") > names.index("AuthenticationMiddleware")


def test_http_the_plain_python_receiver(capsys):
    import http.server
    import threading
    import urllib.error
    import urllib.request

    code = _http_block("import http.server")
    last = 'http.server.ThreadingHTTPServer(("127.0.0.1", 8080), Hook).serve_forever()'
    assert code.rstrip().endswith(last)
    page = run(code.rstrip()[: -len(last)], {"__name__": "docs_http_receiver"})
    page["SECRET"] = "s3cret"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), page["Hook"])  # any free port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def put(body: bytes, headers: dict[str, str]) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.server_port}/", body, headers, method="PUT"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    body = b'{"signal_type": "SAVE", "cqrs_id": "product", "instance_pk": 1, "instance_data": {"id": 1}}'
    try:
        assert put(body, sign(body, "s3cret", event_id="e-1")) == 204
        assert (
            put(body, sign(body, "s3cret", event_id="e-1")) == 204
        )  # redelivered: acknowledged again
        assert put(body, sign(body, "wrong", event_id="e-2")) == 401
    finally:
        server.shutdown()
        server.server_close()
    assert capsys.readouterr().out.splitlines() == ["SAVE product 1"]  # handled once


def test_http_audit_context_for_commands_and_tasks():
    from types import SimpleNamespace

    from dj_cqrs import audit

    seen = []
    page = run(
        _http_block("from dj_cqrs import audit"),
        {"import_prices": lambda: seen.append(audit.current())},
    )
    assert seen == [{"job": "nightly-import", "triggered_by": "cron"}]

    def task(*args, **kwargs):
        seen.append(audit.current())
        return args, kwargs

    task.name = "prices.refresh"
    task.request = SimpleNamespace(id="f00")
    assert page["run_task"](task, 1, force=True) == ((1,), {"force": True})
    assert seen[-1] == {"task": "prices.refresh", "task_id": "f00"}
    assert audit.current() is None  # restored on exit


# -- docs/transports.md: the filesystem options (a block inside a list item) --------------------------


def test_transports_filesystem_options(settings, tmp_path):
    from django.core import checks

    page = (DOCS / "transports.md").read_text(encoding="utf-8")
    (code,) = re.findall(
        r'^  ```python\n(  CQRS\["transport_options"\] = \{.*?)^  ```', page, re.S | re.M
    )
    namespace = run(
        textwrap.dedent(code),
        {"CQRS": {"transport": "kombu", "url": "filesystem://", "queue": "q"}},
    )
    options = namespace["CQRS"]["transport_options"]
    assert set(options) == {"data_folder_in", "data_folder_out", "control_folder"}
    assert (
        options["data_folder_in"] == options["data_folder_out"]
    )  # one folder: every service reads it

    # the same keys, on folders of this test, pass the checks
    settings.CQRS = {
        **settings.CQRS,
        **namespace["CQRS"],
        "transport_options": {
            key: str(tmp_path / Path(value).name) for key, value in options.items()
        },
    }
    errors = [
        m
        for m in checks.run_checks(tags=["dj_cqrs"])
        if (m.id or "").startswith("dj_cqrs.") and m.level >= checks.WARNING
    ]
    assert errors == []


# -- every Python example of the site has its test ---------------------------------------------------

# page -> for each of its Python blocks in order (fenced at any indentation): the test that runs it.
# A block added, removed or moved fails test_every_python_example_of_the_site_has_a_test until this
# list says which test runs it. "x.py::name" names a test function of another file.
SETTINGS_TEST = "test_settings_examples_pass_the_system_checks"
EXAMPLES = "tests/unit/test_docs_examples.py::"
COVERAGE: dict[str, list[str]] = {
    "coming-from.md": [
        "test_from_outbox_pattern_emit_and_handler",
        "test_from_outbox_pattern_emit_and_handler",
        "test_from_pubsubpull_the_receiver_check",
        "test_from_spark_event_source",
        "test_from_spark_event_source",
    ],
    "events.md": [
        "test_events_emit_and_handle",
        "test_events_emit_and_handle",
        "test_events_the_signature_of_emit",
        "test_events_sources_handlers_and_the_testing_example",
        "test_events_sources_handlers_and_the_testing_example",
        SETTINGS_TEST,
        "test_events_sources_handlers_and_the_testing_example",
    ],
    "getting-started.md": [
        "integration_tests/test_getting_started.py::test_the_tutorial_from_start_to_end"
    ]
    * 8,
    "http.md": [
        "test_http_serving_the_pull_endpoint",
        # the attribute of the fragment, on a model of the test project
        "tests/unit/http/test_pull_view.py::test_model_token_restriction",
        "test_http_the_plain_python_receiver",
        "test_http_the_audit_middleware_setting",
        "test_http_audit_context_for_commands_and_tasks",
        "tests/unit/audit/test_docs_replica_example.py::test_the_documented_extra_field_is_not_required_in_messages",
    ],
    "operations.md": ["test_read_your_writes_middleware_and_decorator"] * 2,
    # the attribute of the fragment, on the integration services' trigger models
    "outbox.md": ["integration_tests/test_db_triggers.py::"],
    "scaling.md": [SETTINGS_TEST, "test_scaling_the_quorum_fragment"],
    "settings.md": [SETTINGS_TEST],
    "testing.md": [SETTINGS_TEST] + [f"{EXAMPLES}test_every_example_of_the_pages_is_here"] * 11,
    "transports.md": [SETTINGS_TEST] * 3
    + ["test_transports_filesystem_options"]
    + [f"{EXAMPLES}test_the_queue_transport_of_the_transports_page"] * 2,
}

ANY_FENCE = re.compile(r'^ *```python(?: title="[^"]*")?\n(.*?)^ *```', re.S | re.M)


def test_every_python_example_of_the_site_has_a_test():
    found = {
        str(page.relative_to(DOCS)): len(ANY_FENCE.findall(page.read_text(encoding="utf-8")))
        for page in sorted(DOCS.rglob("*.md"))
    }
    assert {page: n for page, n in found.items() if n} == {
        page: len(tests) for page, tests in COVERAGE.items()
    }
    here = Path(__file__).read_text(encoding="utf-8")
    for tests in COVERAGE.values():
        for test in tests:
            path, _, name = test.rpartition("::") if "::" in test else ("", "", test)
            source = (ROOT / path).read_text(encoding="utf-8") if path else here
            assert not name or f"def {name}(" in source, f"{test} does not exist"


def test_scaling_the_quorum_fragment(settings):
    from django.core import checks

    (_, fragment) = [c for _, _, c in blocks(DOCS / "scaling.md", "python")]
    replica = run(f"SETTING = {{\n{fragment.strip()}\n}}", {})["SETTING"]["replica"]
    assert replica == {"queue_type": "quorum"}
    settings.CQRS = {
        **settings.CQRS,
        "transport": "rabbitmq",
        "url": "amqp://127.0.0.1/",
        "replica": replica,
    }
    errors = [
        m
        for m in checks.run_checks(tags=["dj_cqrs"])
        if (m.id or "").startswith("dj_cqrs.") and m.level >= checks.WARNING
    ]
    assert errors == []
