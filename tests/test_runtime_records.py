"""The record service on SQLite and PostgreSQL: every field type, validation,
uniqueness, concurrency, lookups' on_delete, restore and field history."""
from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
import sqlalchemy as sa

from loomwork.metadata.errors import ConflictError, NotFound, PermissionDenied, ValidationError
from loomwork.runtime.context import Actor, Context

UTC = dt.UTC

OPTIONS = [{"value": "open"}, {"value": "won"}, {"value": "legacy"}]

ITEM = {
    "title": {"type": "text", "max_length": 20, "min_length": 2},
    "notes": {"type": "long_text"},
    "qty": {"type": "integer", "min": 0, "max": 1000},
    "big": {"type": "integer"},
    "amount": {"type": "decimal", "precision": 18, "scale": 2},
    "whole": {"type": "decimal", "precision": 18, "scale": 0},
    "price": {"type": "currency", "precision": 10, "scale": 2, "currency": "EUR", "min": 0},
    "rate": {"type": "percent", "min": 0, "max": 100},
    "active": {"type": "boolean"},
    "due": {"type": "date", "min": "2000-01-01"},
    "starts": {"type": "datetime"},
    "meet_time": {"type": "time"},
    "email": {"type": "email"},
    "phone": {"type": "phone"},
    "website": {"type": "url"},
    "stage": {"type": "choice", "options": OPTIONS},
    "tags": {"type": "multi_choice", "options": [{"value": "a"}, {"value": "b"}, {"value": "c"}]},
    "account": {"type": "lookup", "target": "account"},
    "number": {"type": "autonumber", "pattern": "Q-{YYYY}-{0000}"},
    "extra": {"type": "json"},
}

ACCOUNT = {"name": {"type": "text", "required": True}}


def fixed_clock(year=2026, month=3, day=14):
    return lambda: dt.datetime(year, month, day, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def items(lw_publish):
    lw_publish(account={"fields": ACCOUNT}, item={"fields": ITEM})


def verr(call, *args, **kwargs) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as info:
        call(*args, **kwargs)
    return info.value.errors


# -- round trip of every field type -----------------------------------------------

def test_every_field_type_round_trips(items, rec, lw_ctx):
    acc = rec.create(lw_ctx, "account", {"name": "Acme"})
    ctx = Context(lw_ctx.tenant, lw_ctx.actor, clock=fixed_clock())
    data = {
        "title": "Widget",
        "notes": "long " * 500,
        "qty": 7,
        "big": 2**63 - 1,
        "amount": "1234567890123456.78",
        "whole": "999999999999999999",
        "price": 19.99,
        "rate": "12.5",
        "active": False,
        "due": "2026-01-31",
        "starts": "2026-01-31T09:30:00+08:00",
        "meet_time": "14:45:10",
        "email": "ann@example.com",
        "phone": "+86 (10) 1234-5678",
        "website": "https://example.com/a?b=1",
        "stage": "won",
        "tags": ["c", "a"],
        "account": acc["id"],
        "extra": {"k": [1, 2.5, "x", None, True], "n": {"deep": "ok"}, "u": "中文"},
    }
    created = rec.create(ctx, "item", data)
    expected = {**data, "amount": "1234567890123456.78", "whole": "999999999999999999", "price": "19.99",
                "rate": "12.50", "starts": "2026-01-31T01:30:00+00:00", "number": "Q-2026-0001"}
    got = rec.get(ctx, "item", created["id"])
    for key, want in expected.items():
        assert got[key] == want, key
        assert created[key] == want, key
    assert got["row_version"] == 1
    assert got["created_at"] == "2026-03-14T12:00:00+00:00"
    assert "deleted_at" not in got

    # Update every type to new values and read them back.
    changes = {
        "title": "Gadget", "notes": None, "qty": 0, "big": -(2**62), "amount": "-0.01",
        "whole": "-999999999999999999", "price": "0", "rate": 100, "active": True, "due": "2030-12-31",
        "starts": "2026-06-30T23:59:59.123456-05:00", "meet_time": "00:00", "email": None, "phone": "12345",
        "website": "http://localhost:8080/x", "stage": "open", "tags": [], "account": None, "extra": [1, "two"],
    }
    updated = rec.update(ctx, "item", created["id"], changes, expected_version=1)
    assert updated["row_version"] == 2
    got = rec.get(ctx, "item", created["id"])
    want = {**changes, "amount": "-0.01", "whole": "-999999999999999999", "price": "0.00", "rate": "100.00",
            "starts": "2026-07-01T04:59:59.123456+00:00", "meet_time": "00:00:00"}
    for key, value in want.items():
        assert got[key] == value, key
    assert got["number"] == "Q-2026-0001"  # an autonumber never changes


def test_exact_decimals_sort_and_compare_exactly(items, rec, lw_ctx):
    values = ["0.10", "0.20", "0.30", "9999999999999999.99", "-9999999999999999.99"]
    ids = [rec.create(lw_ctx, "item", {"amount": v})["id"] for v in values]
    got = [rec.get(lw_ctx, "item", i)["amount"] for i in ids]
    assert got == values
    assert sum(Decimal(v) for v in got[:3]) == Decimal("0.60")


def test_decimal_and_datetime_values_in_python_types(items, rec, lw_ctx):
    r = rec.create(lw_ctx, "item", {"amount": Decimal("12.30"),
                                    "starts": "2026-01-31T00:00:00Z"})
    got = rec.get(lw_ctx, "item", r["id"])
    assert got["amount"] == "12.30"
    assert got["starts"] == "2026-01-31T00:00:00+00:00"


BAD_VALUES = [
    ("title", "x", "Length must be between 2 and 20"),
    ("title", "x" * 21, "Length must be between 2 and 20"),
    ("title", 5, "Not a valid string"),
    ("title", "a\x00b", "must not contain NUL (\\x00) characters"),
    ("notes", 5, "Not a valid string"),
    ("notes", "x" * 100_001, "Longer than maximum length 100000"),
    ("notes", "nul\x00", "must not contain NUL (\\x00) characters"),
    ("qty", -1, None),
    ("qty", 1001, None),
    ("qty", "7", "Not a valid integer"),
    ("qty", 7.5, "Not a valid integer"),
    ("qty", True, "Not a valid integer"),
    ("big", 2**63, None),
    ("amount", "1.234", "Too many decimal places (at most 2)"),
    ("amount", "12345678901234567", "Too many digits (at most 18)"),
    ("amount", "1e30", "Too many digits (at most 18)"),
    ("amount", "abc", "Not a valid number"),
    ("amount", "NaN", "Not a valid number"),
    ("amount", "Infinity", "Not a valid number"),
    ("amount", True, "Not a valid number"),
    ("amount", [1], "Not a valid number"),
    ("whole", "0.5", "Too many decimal places (at most 0)"),
    ("price", "-1", None),
    ("rate", "100.01", None),
    ("active", 1, "Not a valid boolean"),
    ("active", 0, "Not a valid boolean"),
    ("active", "true", "Not a valid boolean"),
    ("due", "2026-02-30", "Not a valid date"),
    ("due", "1999-12-31", None),
    ("due", "2026-01-31T10:00:00", "Not a valid date"),
    ("starts", "2026-01-31T09:30:00", "Needs a time zone offset, for example 2026-01-31T09:30:00+08:00"),
    ("starts", "yesterday", "Not a valid datetime"),
    ("starts", "0001-01-01T00:00:00+08:00", "Not a valid datetime"),
    ("meet_time", "25:00", "Not a valid time"),
    ("meet_time", "10:30+08:00", "A time of day takes no time zone offset"),
    ("email", "not-an-email", "Not a valid email address"),
    ("phone", "call me", "is not a phone number"),
    ("website", "ftp://example.com", "Not a valid URL"),
    ("website", "javascript:alert(1)", "Not a valid URL"),
    ("stage", "lost", "must be one of: open, won, legacy"),
    ("tags", ["a", "z"], {"tags.1": ["must be one of: a, b, c"]}),
    ("tags", "a", "Not a valid list"),
    ("tags", ["a", "a"], "must not repeat an option"),
    ("account", 0, None),
    ("account", "1", "Not a valid integer"),
    ("account", 99, "no account record 99"),
    ("extra", {"bad": "x\x00"}, "JSON text must not contain NUL (\\u0000) characters"),
    ("extra", 2**70, "Not a JSON value"),
    ("extra", float("nan"), "Not a JSON value"),
    ("extra", {"x": {1, 2}}, "Not a JSON value"),
    ("number", "Q-1", "is numbered by the system"),
    ("nope", 1, "unknown field"),
    ("created_at", "2026-01-01T00:00:00+00:00", "is set by the system"),
    ("id", 5, "is set by the system"),
]


def test_bad_values_are_validation_errors_keyed_by_field(items, rec, lw_ctx):
    # One test over the whole table keeps the suite fast; mismatches are collected.
    target = rec.create(lw_ctx, "item", {"title": "ok"})
    problems = []
    for field, value, message in BAD_VALUES:
        for op in ("create", "update"):
            try:
                if op == "create":
                    rec.create(lw_ctx, "item", {field: value})
                else:
                    rec.update(lw_ctx, "item", target["id"], {field: value})
            except ValidationError as exc:
                if isinstance(message, dict):
                    ok = exc.errors == message
                else:
                    ok = list(exc.errors) == [field] and (message is None or exc.errors[field] == [message])
                if not ok:
                    problems.append((op, field, value, exc.errors))
            except Exception as exc:  # a crash is a bug: bad input must be a ValidationError
                problems.append((op, field, value, repr(exc)))
            else:
                problems.append((op, field, value, "accepted"))
    assert problems == []
    # Nothing was written by any of them.
    assert rec.get(lw_ctx, "item", target["id"])["row_version"] == 1
    with lw_ctx.tenant.read() as conn:
        table = rec.runtime.compiled(lw_ctx.tenant, conn).object("item").table
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 1


def test_non_mapping_input(items, rec, lw_ctx):
    assert verr(rec.create, lw_ctx, "item", ["title"]) == {"_schema": ["must be a JSON object of field values"]}


def test_several_errors_at_once(items, rec, lw_ctx):
    errors = verr(rec.create, lw_ctx, "item", {"qty": "x", "stage": "nope", "title": "t" * 30})
    assert set(errors) == {"qty", "stage", "title"}


def test_bulk_create_is_all_or_nothing(items, rec, lw_ctx, lw_services):
    errors = verr(rec.bulk_create, lw_ctx, "item", [{"title": "ok"}, {"qty": -5}, {"stage": "x"}])
    assert set(errors) == {"1.qty", "2.stage"}
    made = rec.bulk_create(lw_ctx, "item", [{"title": "one"}, {"title": "two"}])
    assert [r["title"] for r in made] == ["one", "two"]
    year = lw_ctx.now().year
    assert [r["number"] for r in made] == [f"Q-{year}-0001", f"Q-{year}-0002"]
    assert verr(rec.bulk_create, lw_ctx, "item", [{}] * 1001) == {"_schema": ["at most 1000 records per request"]}


def test_unknown_object_and_record(items, rec, lw_ctx):
    with pytest.raises(NotFound):
        rec.create(lw_ctx, "nothing", {})
    with pytest.raises(NotFound):
        rec.get(lw_ctx, "item", 12345)
    with pytest.raises(NotFound):
        rec.get(lw_ctx, "item", "abc")
    with pytest.raises(NotFound):
        rec.get(lw_ctx, "item", 2**64)
    with pytest.raises(NotFound):
        rec.update(lw_ctx, "item", 12345, {"title": "x"})


# -- choices --------------------------------------------------------------------------

def test_inactive_choice_kept_for_old_rows_refused_for_new(items, rec, lw_ctx, lw_services):
    old = rec.create(lw_ctx, "item", {"stage": "legacy", "tags": ["a", "c"]})
    doc = lw_services.metadata.current(lw_ctx).doc
    doc["objects"]["item"]["fields"]["stage"]["options"][2]["active"] = False
    doc["objects"]["item"]["fields"]["tags"]["options"][2]["active"] = False
    lw_services.metadata.publish(lw_ctx, doc)

    got = rec.get(lw_ctx, "item", old["id"])
    assert got["stage"] == "legacy"
    assert got["tags"] == ["a", "c"]
    # Editing other fields (or re-sending the old value) is fine.
    rec.update(lw_ctx, "item", old["id"], {"title": "still legacy", "stage": "legacy", "tags": ["c"]})
    assert rec.get(lw_ctx, "item", old["id"])["stage"] == "legacy"
    # New values may not use it.
    assert verr(rec.create, lw_ctx, "item", {"stage": "legacy"}) == {"stage": ["option 'legacy' is no longer offered"]}
    assert verr(rec.create, lw_ctx, "item", {"tags": ["c"]}) == {"tags": ["option 'c' is no longer offered"]}
    other = rec.create(lw_ctx, "item", {"stage": "open"})
    assert verr(rec.update, lw_ctx, "item", other["id"], {"stage": "legacy"}) == {
        "stage": ["option 'legacy' is no longer offered"]}
    # Moving away from it is allowed, coming back is not.
    rec.update(lw_ctx, "item", old["id"], {"stage": "won"})
    assert verr(rec.update, lw_ctx, "item", old["id"], {"stage": "legacy"}) == {
        "stage": ["option 'legacy' is no longer offered"]}


# -- autonumbers -----------------------------------------------------------------------

def test_autonumber_increments_gap_free_and_restarts_each_year(lw_publish, rec, lw_ctx):
    lw_publish(quote={"fields": {"number": {"type": "autonumber", "pattern": "Q-{YYYY}-{0000}"},
                                 "code": {"type": "text", "unique": True}}})
    ctx26 = Context(lw_ctx.tenant, lw_ctx.actor, clock=fixed_clock(2026))
    ctx27 = Context(lw_ctx.tenant, lw_ctx.actor, clock=fixed_clock(2027, 1, 1))
    assert rec.create(ctx26, "quote", {"code": "a"})["number"] == "Q-2026-0001"
    assert rec.create(ctx26, "quote", {"code": "b"})["number"] == "Q-2026-0002"
    # A create that fails after taking a number gives it back (same transaction).
    assert verr(rec.create, ctx26, "quote", {"code": "a"}) == {"code": ["must be unique: another record has this value"]}
    assert verr(rec.bulk_create, ctx26, "quote", [{"code": "c"}, {"code": "b"}]) == {
        "1.code": ["must be unique: another record has this value"]}
    third = rec.create(ctx26, "quote", {"code": "c"})
    assert third["number"] == "Q-2026-0003"
    assert rec.get(ctx26, "quote", third["id"])["number"] == "Q-2026-0003"
    # New year, new counter; the old one goes on.
    assert rec.create(ctx27, "quote", {})["number"] == "Q-2027-0001"
    assert rec.create(ctx26, "quote", {})["number"] == "Q-2026-0004"
    # The counter is wider than its pattern when it must be.
    with lw_ctx.tenant.write() as conn:
        from loomwork.runtime.systables import autonumbers as a
        conn.execute(a.update().where(a.c.prefix == "Q-2027-").values(value=9999))
    assert rec.create(ctx27, "quote", {})["number"] == "Q-2027-10000"


def test_autonumbers_from_concurrent_creates_have_no_gaps_or_duplicates(lw_publish, rec, lw_ctx):
    lw_publish(ticket={"fields": {"number": {"type": "autonumber", "pattern": "T{0000}"},
                                  "who": {"type": "integer"}}})
    n_threads, per_thread = 8, 3
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            barrier.wait()
            for j in range(per_thread):
                rec.create(lw_ctx, "ticket", {"who": i * 100 + j})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    total = n_threads * per_thread
    with lw_ctx.tenant.read() as conn:
        table = rec.runtime.compiled(lw_ctx.tenant, conn).object("ticket").table
        numbers = sorted(conn.execute(sa.select(table.c.number)).scalars())
    assert numbers == [f"T{i:04d}" for i in range(1, total + 1)]


# -- required, unique, defaults, read-only ---------------------------------------------------

def test_required_fields(lw_publish, rec, lw_ctx):
    lw_publish(task={"fields": {"name": {"type": "text", "required": True},
                                "tags": {"type": "multi_choice", "required": True, "options": [{"value": "x"}]},
                                "note": {"type": "text"}}})
    assert verr(rec.create, lw_ctx, "task", {}) == {"name": ["is required"], "tags": ["is required"]}
    assert verr(rec.create, lw_ctx, "task", {"name": "", "tags": []}) == {"name": ["is required"],
                                                                          "tags": ["is required"]}
    r = rec.create(lw_ctx, "task", {"name": "n", "tags": ["x"]})
    rec.update(lw_ctx, "task", r["id"], {"note": "only this"})  # untouched required fields are fine
    assert verr(rec.update, lw_ctx, "task", r["id"], {"name": None}) == {"name": ["is required"]}
    assert rec.get(lw_ctx, "task", r["id"])["name"] == "n"


def test_unique_is_a_field_error_and_partial_on_live_rows(lw_publish, rec, lw_ctx):
    lw_publish(member={"fields": {"email": {"type": "email", "unique": True}, "name": {"type": "text"}}})
    a = rec.create(lw_ctx, "member", {"email": "a@example.com"})
    b = rec.create(lw_ctx, "member", {"email": "b@example.com"})
    assert verr(rec.create, lw_ctx, "member", {"email": "a@example.com"}) == {
        "email": ["must be unique: another record has this value"]}
    assert verr(rec.update, lw_ctx, "member", b["id"], {"email": "a@example.com"}) == {
        "email": ["must be unique: another record has this value"]}
    # Empty values never collide.
    rec.create(lw_ctx, "member", {"name": "x"})
    rec.create(lw_ctx, "member", {"name": "y"})
    # A soft-deleted row frees its value...
    rec.delete(lw_ctx, "member", a["id"])
    c = rec.create(lw_ctx, "member", {"email": "a@example.com"})
    assert c["email"] == "a@example.com"
    # ...so restoring it would collide.
    assert verr(rec.restore, lw_ctx, "member", a["id"]) == {"email": ["must be unique: another record has this value"]}
    rec.update(lw_ctx, "member", c["id"], {"email": "c@example.com"})
    restored = rec.restore(lw_ctx, "member", a["id"])
    assert restored["email"] == "a@example.com"
    assert "deleted_at" not in restored


def test_concurrent_creates_of_one_unique_value(lw_publish, rec, lw_ctx):
    lw_publish(member={"fields": {"email": {"type": "email", "unique": True}}})
    n = 6
    barrier = threading.Barrier(n)
    outcomes: list[object] = []

    def work() -> None:
        barrier.wait()
        try:
            outcomes.append(rec.create(lw_ctx, "member", {"email": "same@example.com"}))
        except Exception as exc:  # anything but a ValidationError fails the assertion below
            outcomes.append(exc)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    created = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, ValidationError)]
    assert len(created) == 1 and len(refused) == n - 1, outcomes
    assert all(e.errors == {"email": ["must be unique: another record has this value"]} for e in refused)


def test_unique_together_index(lw_publish, rec, lw_ctx):
    lw_publish(slot={"fields": {"room": {"type": "text"}, "day": {"type": "date"}},
                     "indexes": {"room_day": {"fields": ["room", "day"], "unique": True}}})
    rec.create(lw_ctx, "slot", {"room": "A", "day": "2026-01-01"})
    rec.create(lw_ctx, "slot", {"room": "A", "day": "2026-01-02"})
    assert verr(rec.create, lw_ctx, "slot", {"room": "A", "day": "2026-01-01"}) == {
        "room": ["must be unique together with day"]}


def test_defaults(lw_publish, rec, lw_ctx):
    lw_publish(purchase={"fields": {
        "stage": {"type": "choice", "options": [{"value": "new"}, {"value": "done"}], "default": "new",
                  "required": True},
        "qty": {"type": "integer", "default": 1},
        "price": {"type": "decimal", "scale": 2, "default": "9.5"},
        "flag": {"type": "boolean", "default": False},
        "at": {"type": "datetime", "default": "2026-01-01T08:00:00+08:00"},
        "tags": {"type": "multi_choice", "options": [{"value": "x"}], "default": ["x"]},
    }})
    r = rec.create(lw_ctx, "purchase", {})
    got = rec.get(lw_ctx, "purchase", r["id"])
    assert (got["stage"], got["qty"], got["price"], got["flag"], got["at"], got["tags"]) == (
        "new", 1, "9.50", False, "2026-01-01T00:00:00+00:00", ["x"])
    r = rec.create(lw_ctx, "purchase", {"stage": "done", "qty": 5})
    assert (r["stage"], r["qty"]) == ("done", 5)
    # Defaults apply on create only.
    rec.update(lw_ctx, "purchase", r["id"], {"qty": None})
    assert rec.get(lw_ctx, "purchase", r["id"])["qty"] is None


def test_read_only_fields(lw_publish, rec, lw_ctx):
    lw_publish(doc={"fields": {"code": {"type": "text", "read_only": True}, "name": {"type": "text"},
                               "price": {"type": "decimal", "scale": 2, "read_only": True},
                               "at": {"type": "datetime", "read_only": True}}})
    user = Context(lw_ctx.tenant, Actor(42, "bob", frozenset({"user"})))
    assert verr(rec.create, user, "doc", {"code": "X"}) == {"code": ["is read-only"]}
    r = rec.create(lw_ctx, "doc", {"code": "X", "name": "n"})  # administrators may set it
    assert rec.update(user, "doc", r["id"], {"name": "m"})["name"] == "m"
    assert verr(rec.update, user, "doc", r["id"], {"code": "Y"}) == {"code": ["is read-only"]}
    rec.update(user, "doc", r["id"], {"code": "X"})  # sending the unchanged value is harmless
    assert rec.get(user, "doc", r["id"])["code"] == "X"
    # "Unchanged" is judged on typed values, as a form would send them back.
    rec.update(lw_ctx, "doc", r["id"], {"price": "1.5", "at": "2026-01-01T08:00:00+08:00"})
    rec.update(user, "doc", r["id"], {"price": 1.50, "at": "2026-01-01T00:00:00Z", "name": "o"})
    assert verr(rec.update, user, "doc", r["id"], {"price": "1.51"}) == {"price": ["is read-only"]}
    got = rec.get(user, "doc", r["id"])
    assert (got["price"], got["name"]) == ("1.50", "o")


def test_role_permissions_apply_to_writes(lw_services, rec, lw_ctx):
    lw_services.metadata.publish(lw_ctx, {
        "objects": {"note": {"fields": {"text": {"type": "text"}}}},
        "roles": {"reader": {"permissions": {"note": ["read"]}}},
    })
    r = rec.create(lw_ctx, "note", {"text": "hi"})
    reader = Context(lw_ctx.tenant, Actor(7, "rita", frozenset({"reader"})))
    assert rec.get(reader, "note", r["id"])["text"] == "hi"
    with pytest.raises(PermissionDenied):
        rec.create(reader, "note", {"text": "x"})
    with pytest.raises(PermissionDenied):
        rec.update(reader, "note", r["id"], {"text": "x"})
    with pytest.raises(PermissionDenied):
        rec.delete(reader, "note", r["id"])
    assert rec.get(lw_ctx, "note", r["id"])["text"] == "hi"


# -- optimistic concurrency -----------------------------------------------------------------

def test_stale_row_version_is_a_conflict(items, rec, lw_ctx):
    r = rec.create(lw_ctx, "item", {"title": "v1"})
    rec.update(lw_ctx, "item", r["id"], {"title": "v2"}, expected_version=1)
    with pytest.raises(ConflictError):
        rec.update(lw_ctx, "item", r["id"], {"title": "v3"}, expected_version=1)
    with pytest.raises(ConflictError):
        rec.update(lw_ctx, "item", r["id"], {"title": "v3", "row_version": 1})
    assert verr(rec.update, lw_ctx, "item", r["id"], {"title": "v3", "row_version": "2"}) == {
        "row_version": ["must be an integer"]}
    with pytest.raises(ConflictError):
        rec.delete(lw_ctx, "item", r["id"], expected_version=1)
    got = rec.get(lw_ctx, "item", r["id"])
    assert (got["title"], got["row_version"]) == ("v2", 2)
    same = rec.update(lw_ctx, "item", r["id"], {"title": "v2"}, expected_version=2)
    assert same["row_version"] == 2  # nothing changed, nothing written


def test_two_threads_same_expected_version_exactly_one_wins(items, rec, lw_ctx):
    r = rec.create(lw_ctx, "item", {"qty": 0})
    for round_ in range(3):
        version = rec.get(lw_ctx, "item", r["id"])["row_version"]
        barrier = threading.Barrier(2)
        outcomes: list[object] = []

        def work(value: int, version=version, barrier=barrier, outcomes=outcomes) -> None:
            barrier.wait()
            try:
                outcomes.append(rec.update(lw_ctx, "item", r["id"], {"qty": value}, expected_version=version))
            except ConflictError as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=work, args=(v,)) for v in (round_ * 10 + 1, round_ * 10 + 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        wins = [o for o in outcomes if isinstance(o, dict)]
        losses = [o for o in outcomes if isinstance(o, ConflictError)]
        assert len(wins) == 1 and len(losses) == 1, outcomes
        got = rec.get(lw_ctx, "item", r["id"])
        assert got["row_version"] == version + 1
        assert got["qty"] == wins[0]["qty"]


# -- lookups and on_delete ---------------------------------------------------------------------

@pytest.fixture
def crm(lw_publish):
    lw_publish(
        account={"fields": {"name": {"type": "text", "required": True}}},
        contact={"fields": {"name": {"type": "text"},
                            "account": {"type": "lookup", "target": "account", "on_delete": "cascade"}}},
        deal={"fields": {"name": {"type": "text"},
                         "account": {"type": "lookup", "target": "account", "on_delete": "restrict"},
                         "contact": {"type": "lookup", "target": "contact", "on_delete": "set_null"}}},
        call={"fields": {"contact": {"type": "lookup", "target": "contact", "on_delete": "cascade"}}},
    )


def test_restrict_refuses_delete_while_referenced(crm, rec, lw_ctx):
    acc = rec.create(lw_ctx, "account", {"name": "Acme"})
    deal = rec.create(lw_ctx, "deal", {"name": "D", "account": acc["id"]})
    with pytest.raises(ConflictError, match="1 deal record"):
        rec.delete(lw_ctx, "account", acc["id"])
    assert rec.get(lw_ctx, "account", acc["id"])["name"] == "Acme"
    rec.delete(lw_ctx, "deal", deal["id"])
    rec.delete(lw_ctx, "account", acc["id"])  # a deleted deal no longer holds it
    with pytest.raises(NotFound):
        rec.get(lw_ctx, "account", acc["id"])


def test_set_null_clears_child_with_history(crm, rec, lw_ctx):
    acc = rec.create(lw_ctx, "account", {"name": "Acme"})
    con = rec.create(lw_ctx, "contact", {"name": "Ann"})
    deal = rec.create(lw_ctx, "deal", {"name": "D", "account": acc["id"], "contact": con["id"]})
    bob = Context(lw_ctx.tenant, Actor(9, "bob", frozenset({"admin"})))
    rec.delete(bob, "contact", con["id"])
    got = rec.get(lw_ctx, "deal", deal["id"])
    assert got["contact"] is None
    assert got["account"] == acc["id"]
    assert got["row_version"] == 2
    assert got["updated_by"] == 9
    hist = rec.history(lw_ctx, "deal", deal["id"])
    assert hist[0]["action"] == "update"
    assert (hist[0]["field"], hist[0]["old"], hist[0]["new"], hist[0]["changed_by"]) == (
        "contact", con["id"], None, 9)


def test_cascade_soft_deletes_children_recursively_and_restore(crm, rec, lw_ctx):
    acc = rec.create(lw_ctx, "account", {"name": "Acme"})
    other = rec.create(lw_ctx, "account", {"name": "Other"})
    c1 = rec.create(lw_ctx, "contact", {"name": "c1", "account": acc["id"]})
    c2 = rec.create(lw_ctx, "contact", {"name": "c2", "account": acc["id"]})
    c3 = rec.create(lw_ctx, "contact", {"name": "c3", "account": other["id"]})
    call = rec.create(lw_ctx, "call", {"contact": c1["id"]})
    rec.delete(lw_ctx, "account", acc["id"])
    for obj, rid in (("account", acc["id"]), ("contact", c1["id"]), ("contact", c2["id"]), ("call", call["id"])):
        with pytest.raises(NotFound):
            rec.get(lw_ctx, obj, rid)
        assert rec.history(lw_ctx, obj, rid)[0]["action"] == "delete"
    assert rec.get(lw_ctx, "contact", c3["id"])["name"] == "c3"
    # A lookup may not point at a deleted record.
    assert verr(rec.create, lw_ctx, "contact", {"account": acc["id"]}) == {
        "account": [f"no account record {acc['id']}"]}
    # Restore brings the record back with a new row_version and a history row.
    restored = rec.restore(lw_ctx, "account", acc["id"])
    assert restored["name"] == "Acme"
    assert restored["row_version"] == 3  # created 1, deleted 2, restored 3
    assert rec.get(lw_ctx, "account", acc["id"])["row_version"] == 3
    assert rec.history(lw_ctx, "account", acc["id"])[0]["action"] == "restore"
    assert rec.restore(lw_ctx, "account", acc["id"])["row_version"] == 3  # restoring a live record is a no-op


def test_cascade_is_refused_when_a_grandchild_restricts(lw_publish, rec, lw_ctx):
    lw_publish(
        account={"fields": {"name": {"type": "text"}}},
        contact={"fields": {"account": {"type": "lookup", "target": "account", "on_delete": "cascade"}}},
        deal={"fields": {"contact": {"type": "lookup", "target": "contact", "on_delete": "restrict"}}},
    )
    acc = rec.create(lw_ctx, "account", {"name": "A"})
    con = rec.create(lw_ctx, "contact", {"account": acc["id"]})
    rec.create(lw_ctx, "deal", {"contact": con["id"]})
    with pytest.raises(ConflictError):
        rec.delete(lw_ctx, "account", acc["id"])
    # Nothing was deleted: the cascade rolled back with the refusal.
    assert rec.get(lw_ctx, "account", acc["id"])["row_version"] == 1
    assert rec.get(lw_ctx, "contact", con["id"])["row_version"] == 1


def test_restoring_a_record_whose_lookup_target_is_deleted_is_refused(crm, rec, lw_ctx):
    acc = rec.create(lw_ctx, "account", {"name": "Acme"})
    con = rec.create(lw_ctx, "contact", {"name": "c", "account": acc["id"]})
    rec.delete(lw_ctx, "account", acc["id"])  # cascades to the contact
    with pytest.raises(ConflictError, match="account"):
        rec.restore(lw_ctx, "contact", con["id"])
    rec.restore(lw_ctx, "account", acc["id"])
    assert rec.restore(lw_ctx, "contact", con["id"])["account"] == acc["id"]


def test_self_referencing_records(lw_publish, rec, lw_ctx):
    lw_publish(node={"fields": {"parent": {"type": "lookup", "target": "node", "on_delete": "restrict"}}})
    a = rec.create(lw_ctx, "node", {})
    rec.update(lw_ctx, "node", a["id"], {"parent": a["id"]})  # a root pointing at itself
    b = rec.create(lw_ctx, "node", {"parent": a["id"]})
    with pytest.raises(ConflictError, match="1 node record"):
        rec.delete(lw_ctx, "node", a["id"])
    rec.delete(lw_ctx, "node", b["id"])
    rec.delete(lw_ctx, "node", a["id"])
    assert rec.restore(lw_ctx, "node", a["id"])["parent"] == a["id"]


# -- history ---------------------------------------------------------------------------------------

def test_change_history_for_create_update_delete(crm, rec, lw_ctx):
    ann = Context(lw_ctx.tenant, Actor(3, "ann", frozenset({"admin"})))
    bob = Context(lw_ctx.tenant, Actor(4, "bob", frozenset({"admin"})))
    acc = rec.create(ann, "account", {"name": "Acme"})
    rec.update(bob, "account", acc["id"], {"name": "Acme Ltd"})
    rec.update(bob, "account", acc["id"], {"name": "Acme Ltd"})  # no change, no history
    rec.delete(ann, "account", acc["id"])
    hist = rec.history(lw_ctx, "account", acc["id"])
    assert [(h["action"], h["field"], h["old"], h["new"], h["changed_by"]) for h in hist] == [
        ("delete", None, None, None, 3),
        ("update", "name", "Acme", "Acme Ltd", 4),
        ("create", None, None, {"name": "Acme"}, 3),
    ]
    for h in hist:
        assert dt.datetime.fromisoformat(h["changed_at"]).tzinfo is not None
    with pytest.raises(NotFound):
        rec.history(lw_ctx, "account", 999)


def test_history_of_typed_values_is_json(items, rec, lw_ctx):
    r = rec.create(lw_ctx, "item", {"amount": "1.50", "starts": "2026-01-01T00:00:00+01:00", "due": "2026-01-01"})
    rec.update(lw_ctx, "item", r["id"], {"amount": "2.25"})
    hist = rec.history(lw_ctx, "item", r["id"])
    assert (hist[0]["field"], hist[0]["old"], hist[0]["new"]) == ("amount", "1.50", "2.25")
    assert hist[1]["new"]["amount"] == "1.50"
    assert hist[1]["new"]["starts"] == "2025-12-31T23:00:00+00:00"
    assert hist[1]["new"]["due"] == "2026-01-01"
    assert hist[1]["new"]["number"].startswith("Q-")


def test_empty_json_and_multi_choice_are_sql_null(items, rec, lw_ctx, lw_services):
    """Sent as null or left out, an empty json field is the same SQL NULL."""
    sent = rec.create(lw_ctx, "item", {"extra": None})
    omitted = rec.create(lw_ctx, "item", {})
    table = lw_services.runtime.compiled(lw_ctx.tenant).object("item").table
    with lw_ctx.tenant.read() as conn:
        nulls = conn.execute(sa.select(table.c.id).where(table.c.extra.is_(None))).scalars().all()
    assert {sent["id"], omitted["id"]} <= set(nulls)
