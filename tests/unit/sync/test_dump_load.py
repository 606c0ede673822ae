"""cqrs_bulk_dump → cqrs_bulk_load round trips, bad input, --clear, exit codes (SQLite by default;
DATABASE_URL=postgres://... runs the same tests on PostgreSQL)."""

from __future__ import annotations

import datetime
import decimal
import io
import json
import uuid

import pytest
from django.db import connection
from django.utils import timezone

from dj_cqrs.replica import bulk
from dj_cqrs.sync import dump, load
from tests.apps.master_app.models import (
    AllTypesModel,
    Author,
    BasicFieldsModel,
    Book,
    Publisher,
    UUIDPkModel,
)
from tests.apps.replica_app.models import (
    AllTypesModelRef,
    AuthorRef,
    BasicFieldsModelRef,
    MappedModelRef,
    UUIDPkModelRef,
)
from tests.unit.sync.helpers import rows, run

pytestmark = pytest.mark.django_db(transaction=True)

TEXTS = ["Kaffee ☕ 1/2", "Grüße \"quoted\" \\ back\nslash\ttab", "日本語テキスト", "", "emoji 🎉 \u2028 sep"]


def make_basic(n: int) -> None:
    base = timezone.now().replace(microsecond=123456)
    for i in range(1, n + 1):
        BasicFieldsModel.objects.create(
            int_field=i,
            bool_field=i % 2 == 0,
            char_field=TEXTS[i % len(TEXTS)] + str(i),
            date_field=datetime.date(2024, 1, 1) + datetime.timedelta(days=i),
            datetime_field=base + datetime.timedelta(seconds=i),
            float_field=i / 3,
            url_field=f"https://example.com/{i}",
            uuid_field=uuid.UUID(int=i),
            decimal_field=decimal.Decimal("12345678901234.123456789012345") / i,
        )


def master_as_replica() -> dict:
    return rows(BasicFieldsModel)


def test_round_trip_equals_master(transport, tmp_path):
    make_basic(23)
    BasicFieldsModel.objects.create(int_field=1000)  # all-NULL optional fields
    for obj in BasicFieldsModel.objects.filter(int_field__lte=5):
        obj.char_field = "changed ü"
        obj.save()
    path = tmp_path / "basic.dump"
    result = run("cqrs_bulk_dump", "--cqrs-id", "basic", "--output", str(path), "--batch", "4")
    assert result.code == 0, result.err
    assert "24 instance(s) saved." in result.err
    text = path.read_text(encoding="utf-8")
    assert text.isascii()  # non-ASCII escaped: same bytes in any locale, as django-cqrs writes
    lines = text.splitlines()
    assert lines[0] == "basic" and len(lines) == 25
    assert len({json.loads(line)["int_field"] for line in lines[1:]}) == 24

    loaded = run("cqrs_bulk_load", "--input", str(path), "--batch", "7", "--workers", "2")
    assert loaded.code == 0, loaded.err
    assert "24 instance(s) loaded." in loaded.err
    assert rows(BasicFieldsModelRef) == master_as_replica()
    ref = BasicFieldsModelRef.objects.get(pk=3)
    assert ref.decimal_field == BasicFieldsModel.objects.get(pk=3).decimal_field
    assert ref.cqrs_revision == 1


def test_bulk_loaded_rows_equal_consumer_applied_rows(transport):
    make_basic(6)
    transport.join(fail_fast=True)  # the consumer path
    by_consumer = rows(BasicFieldsModelRef)
    BasicFieldsModelRef.objects.all().delete()
    out = io.StringIO()
    dump.dump(BasicFieldsModel, out)
    report = load.load(io.StringIO(out.getvalue()))
    assert (report.loaded, report.skipped, report.failed) == (6, 0, 0)
    assert rows(BasicFieldsModelRef) == by_consumer


def test_all_types_and_uuid_pk_round_trip(transport):
    AllTypesModel.objects.create(
        text="Ünïcødé ☕", decimal=decimal.Decimal("0.00000000000000000001"),
        time=datetime.time(23, 59, 58, 999999), duration=datetime.timedelta(days=3, microseconds=7),
        binary=b"\x00\xffbytes", json={"a": [1, "é", None], "b": {"c": 1.5}}, uuid=uuid.uuid4(),
    )
    AllTypesModel.objects.create()
    for i in range(5):
        UUIDPkModel.objects.create(name=f"ü {i}")
    for cqrs_id, master, replica in (("all_types", AllTypesModel, AllTypesModelRef), ("uuid_pk", UUIDPkModel, UUIDPkModelRef)):
        out = run("cqrs_bulk_dump", "-c", cqrs_id, "-o", "-", "-b", "2")
        assert out.code == 0, out.err
        result = run("cqrs_bulk_load", "-i", "-", stdin=out.out)
        assert result.code == 0, result.err
        expected = rows(master)
        actual = rows(replica)
        for values in list(expected.values()) + list(actual.values()):
            if values.get("binary") is not None:
                values["binary"] = bytes(values["binary"])
        assert actual == expected


def test_load_never_overwrites_newer_replica_revision(transport):
    make_basic(4)
    transport.join(fail_fast=True)
    BasicFieldsModelRef.objects.filter(pk=1).update(cqrs_revision=7, char_field="newer on replica")
    BasicFieldsModelRef.objects.filter(pk=2).update(char_field="same revision, other text")
    BasicFieldsModelRef.objects.filter(pk=3).update(cqrs_revision=-1, char_field="older")
    BasicFieldsModelRef.objects.filter(pk=4).delete()
    out = io.StringIO()
    dump.dump(BasicFieldsModel, out)
    report = load.load(io.StringIO(out.getvalue()))
    assert (report.loaded, report.skipped, report.failed) == (2, 2, 0)
    assert BasicFieldsModelRef.objects.get(pk=1).char_field == "newer on replica"
    assert BasicFieldsModelRef.objects.get(pk=2).char_field == "same revision, other text"
    assert BasicFieldsModelRef.objects.get(pk=3).char_field == BasicFieldsModel.objects.get(pk=3).char_field
    assert BasicFieldsModelRef.objects.filter(pk=4).exists()


def test_django_cqrs_dump_without_final_newline_and_with_duplicates():
    # django-cqrs 3.1.0 writes no newline after the last line, and its OFFSET paging repeats rows.
    lines = [
        "simplest",
        '{"cqrs_revision":0,"cqrs_updated":"2026-11-22 09:16:08.172010+00:00","id":1,"name":"a \\u2615\\/"}',
        '{"cqrs_revision":2,"cqrs_updated":"2026-11-22 09:16:09+00:00","id":2,"name":"two v2"}',
        '{"cqrs_revision":1,"cqrs_updated":"2026-11-22 09:16:08+00:00","id":2,"name":"two v1"}',
        '{"cqrs_revision":0,"cqrs_updated":"2026-11-22 09:16:08.172010+00:00","id":1,"name":"a \\u2615\\/"}',
    ]
    result = run("cqrs_bulk_load", "-i", "-", stdin="\n".join(lines))
    assert result.code == 0, result.err
    assert "2 instance(s) loaded." in result.err and "2 instance(s) skipped" in result.err
    from tests.apps.replica_app.models import SimplestModelRef

    assert dict(SimplestModelRef.objects.values_list("pk", "name")) == {1: "a ☕/", 2: "two v2"}


BAD_DUMP = "\n".join(
    [
        "basic",
        '{"int_field":1,"char_field":"good 1","cqrs_revision":0,"cqrs_updated":"2026-01-01 00:00:00+00:00"}',
        "",
        "{not json",
        '{"int_field":2,"unknown_field":"x","cqrs_revision":0,"cqrs_updated":"2026-01-01 00:00:00+00:00"}',
        '{"only_unknown":1,"cqrs_revision":0,"cqrs_updated":"2026-01-01 00:00:00+00:00"}',
        '{"int_field":3,"cqrs_updated":"2026-01-01 00:00:00+00:00"}',
        '[1, 2]',
        '{"int_field":4,"date_field":"not a date","cqrs_revision":0,"cqrs_updated":"2026-01-01 00:00:00+00:00"}',
        '{"int_field":5,"cqrs_revision":0,"cqrs_updated":null}',
        '{"int_field":6,"char_field":"good 6","cqrs_revision":0,"cqrs_updated":"2026-01-01 00:00:00+00:00"}',
    ]
) + "\n"


@pytest.mark.parametrize(("batch", "workers"), [("1", "0"), ("3", "0"), ("100", "0"), ("2", "2")])
def test_bad_lines_are_reported_and_lose_no_good_line(batch, workers):
    result = run("cqrs_bulk_load", "-i", "-", "-b", batch, "--workers", workers, stdin=BAD_DUMP)
    assert result.code == 3
    errors = [line for line in result.err.splitlines() if line.startswith("line ")]
    assert [e.split(":")[0] for e in errors] == [
        "line 3", "line 4", "line 6", "line 7", "line 8", "line 9", "line 10"
    ]
    assert "line 3: empty line" in result.err
    assert "line 4: not valid JSON" in result.err
    assert "line 6: primary key 'int_field' missing" in result.err
    assert "line 7: cqrs_revision (an integer) and cqrs_updated are required" in result.err
    assert "line 8: not a JSON object" in result.err
    assert "line 9: invalid value" in result.err and "date" in result.err
    assert "line 10: database error" in result.err
    assert "Ignored field(s) the replica model does not store: only_unknown, unknown_field" in result.err
    assert "3 instance(s) loaded." in result.err and "7 line(s) failed." in result.err
    assert dict(BasicFieldsModelRef.objects.values_list("pk", "char_field")) == {1: "good 1", 2: None, 6: "good 6"}


def test_wrong_cqrs_id_and_empty_input_fail_before_writing(tmp_path):
    assert run("cqrs_bulk_load", "-i", "-", stdin="nope\n{}\n").error == "Wrong CQRS ID: nope!"
    assert run("cqrs_bulk_load", "-i", "-", stdin="").error == "File - is empty!"
    missing = run("cqrs_bulk_load", "-i", str(tmp_path / "missing.dump"))
    assert missing.code == 1 and "cannot be read" in missing.error
    assert run("cqrs_bulk_dump", "-c", "nope").error == "Wrong CQRS ID: nope!"


def test_unknown_cqrs_id_is_logged_as_django_cqrs_logs_it(caplog):
    """Every command that looks a ``CQRS_ID`` up logs django-cqrs's ERROR line before failing."""
    header = "nope,2024-01-01 00:00:00+00:00"
    runs = [
        run("cqrs_bulk_dump", "-c", "nope"),
        run("cqrs_bulk_load", "-i", "-", stdin="nope\n{}\n"),
        run("cqrs_sync", "-c", "nope", "-f", "{}"),
        run("cqrs_diff_master", "-c", "nope"),
        run("cqrs_diff_replica", stdin=f"{header}\n[[1, 0]]\n"),
        run("cqrs_diff_sync", stdin=f"{header},None\n[1]\n"),
        run("cqrs_deleted_diff_replica", "-c", "nope"),
        run("cqrs_deleted_diff_master", stdin=f"{header}\n[1]\n"),
        run("cqrs_deleted_sync_replica", stdin=f"{header}\n[1]\n"),
    ]
    assert [r.error for r in runs] == ["Wrong CQRS ID: nope!"] * len(runs)
    lines = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if "CQRS_ID" in r.getMessage()]
    assert lines == [("django-cqrs.sync", "ERROR", "No model with such CQRS_ID: nope.")] * len(runs)


ONE_ROW = 'simplest\n{"id":9,"name":"new","cqrs_revision":0,"cqrs_updated":"2026-01-01 00:00:00+00:00"}\n'


@pytest.mark.parametrize(
    ("args", "cleared"),
    [
        (["--clear"], True),
        (["--clear=True"], True),
        (["--clear", "true"], True),
        (["-c", "1"], True),
        (["--clear=yes"], True),
        (["--clear=False"], False),
        (["--clear", "false"], False),
        (["-c", "0"], False),
        ([], False),
    ],
)
def test_clear_is_a_real_boolean(args, cleared):
    from tests.apps.replica_app.models import SimplestModelRef

    SimplestModelRef.objects.create(id=1, name="old", cqrs_revision=0, cqrs_updated=timezone.now())
    result = run("cqrs_bulk_load", "-i", "-", *args, stdin=ONE_ROW)
    assert result.code == 0, result.err
    assert SimplestModelRef.objects.filter(pk=1).exists() is not cleared
    assert SimplestModelRef.objects.filter(pk=9).exists()


def test_clear_rejects_nonsense():
    from django.core.management import call_command

    with pytest.raises(Exception, match="expected a boolean"):
        call_command("cqrs_bulk_load", "-i", "-", "--clear=maybe", stdin=io.StringIO(ONE_ROW))


def test_dump_refuses_to_overwrite_without_force(tmp_path):
    make_basic(2)
    path = tmp_path / "x.dump"
    path.write_text("keep")
    assert run("cqrs_bulk_dump", "-c", "basic", "-o", str(path)).error == f"File {path} exists!"
    assert path.read_text() == "keep"
    assert run("cqrs_bulk_dump", "-c", "basic", "-o", str(path), "--force").code == 0
    assert path.read_text().startswith("basic\n")
    assert not (tmp_path / "x.dump.partial").exists()


def test_dump_default_file_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_basic(1)
    assert run("cqrs_bulk_dump", "-c", "basic").code == 0
    assert (tmp_path / "basic.dump").read_text().startswith("basic\n")


def test_progress_goes_to_stderr_never_stdout(transport):
    make_basic(5)
    result = run("cqrs_bulk_dump", "-c", "basic", "-o", "-", "-p", "-b", "2")
    assert result.code == 0
    assert result.out.splitlines()[0] == "basic" and len(result.out.splitlines()) == 6
    assert all(line == "basic" or line.startswith("{") for line in result.out.splitlines())
    assert "rows" in result.err
    loaded = run("cqrs_bulk_load", "-i", "-", "-p", stdin=result.out)
    assert loaded.code == 0 and "lines" in loaded.err and loaded.out == ""


def test_dump_uses_one_query_per_batch(transport, django_assert_num_queries):
    make_basic(10)
    with django_assert_num_queries(4):  # 10 rows in batches of 3: 3 full pages + 1 short page
        dump.dump(BasicFieldsModel, io.StringIO(), batch_size=3)


def test_serializer_model_dump_uses_relate_cqrs_serialization(transport, django_assert_num_queries):
    publisher = Publisher.objects.create(name="pub ☕")
    for i in range(1, 5):
        author = Author.objects.create(id=i, name=f"author {i}", publisher=publisher)
        Book.objects.create(title=f"book {i}", author=author)
    out = io.StringIO()
    with django_assert_num_queries(4):  # 2 batches x (rows with select_related + books prefetch)
        report = dump.dump(Author, out, batch_size=3)
    assert report.dumped == 4
    lines = out.getvalue().splitlines()
    assert json.loads(lines[1])["publisher"] == {"id": publisher.pk, "name": "pub ☕"}
    # AuthorRef has CQRS_CUSTOM_SERIALIZATION and its own cqrs_create: loaded row by row
    assert bulk.per_row_reason(AuthorRef) == "CQRS_CUSTOM_SERIALIZATION"
    report = load.load(io.StringIO(out.getvalue()))
    assert (report.loaded, report.failed) == (4, 0)
    assert AuthorRef.objects.get(pk=2).book_titles == ["book 2"]
    assert AuthorRef.objects.get(pk=2).publisher_name == "pub ☕"


def test_mapped_model_loads_through_its_cqrs_update():
    text = "\n".join(
        [
            "tracked",
            '{"id":1,"status":"new","owner":null,"other":"x","cqrs_revision":0,"cqrs_updated":"2026-01-01 00:00:00+00:00"}',
            '{"id":1,"status":"done","owner":5,"other":"x","cqrs_revision":1,"cqrs_updated":"2026-01-02 00:00:00+00:00"}',
            '{"status":"no id","owner":null,"cqrs_revision":0,"cqrs_updated":"2026-01-01 00:00:00+00:00"}',
        ]
    )
    errors: list = []
    report = load.load(io.StringIO(text), on_error=lambda n, r: errors.append((n, r)))
    assert (report.loaded, report.failed) == (2, 1)
    assert errors == [(4, "CQRS_MAPPING key(s) missing: id")]
    ref = MappedModelRef.objects.get(pk=1)
    assert (ref.state, ref.owner_id, ref.cqrs_revision) == ("done", 5, 1)


def test_raw_replica_without_table_gets_every_row():
    from tests.apps.replica_app.models import EventLog

    report = load.load(io.StringIO('meta_model\n{"id":1,"cqrs_revision":0,"cqrs_updated":"x"}\n'))
    assert report.loaded == 1 and EventLog.events[0][0] == "save"
    with pytest.raises(load.LoadError, match="cannot clear"):
        load.load(io.StringIO("meta_model\n"), clear=True)


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_postgres_value_too_long_isolated():
    long = "x" * 300
    text = "\n".join(
        ["simplest"]
        + [f'{{"id":{i},"name":"{long if i == 5 else i}","cqrs_revision":0,"cqrs_updated":"2026-01-01 00:00:00+00:00"}}' for i in range(1, 10)]
    )
    report = load.load(io.StringIO(text), on_error=lambda n, r: None)
    assert (report.loaded, report.failed) == (8, 1)


def test_vendor_is_known():
    assert connection.vendor in ("sqlite", "postgresql")


def test_dump_layout_is_django_cqrs_s(transport, tmp_path):
    """The CQRS_ID, then a newline before each row and none at the end (also with no row)."""
    path = tmp_path / "empty.dump"
    assert run("cqrs_bulk_dump", "-c", "basic", "-o", str(path)).code == 0
    assert path.read_text() == "basic"
    make_basic(2)
    out = run("cqrs_bulk_dump", "-c", "basic", "-o", "-", "-b", "1")
    assert out.code == 0 and not out.out.endswith("\n")
    header, *rows = out.out.split("\n")
    assert header == "basic" and [json.loads(r)["int_field"] for r in rows] == [1, 2]
    transport.join(fail_fast=True)
    BasicFieldsModelRef.objects.all().delete()
    assert run("cqrs_bulk_load", "-i", "-", stdin=out.out).code == 0
    assert BasicFieldsModelRef.objects.count() == 2
