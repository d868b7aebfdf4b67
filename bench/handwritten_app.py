"""The baseline: the ``deal`` endpoints written by hand with Flask + SQLAlchemy Core.

It does what a careful developer would write for one table, and the same work the
generated API does for it:

* bearer token: SHA-256 of the token looked up in the tenant's ``lw_token`` table
  (joined to ``lw_user`` for ``active``; revoked and expired tokens refused);
* input: a marshmallow schema with the same type, required, choice, length and range
  checks, unknown keys refused, the stage default;
* storage: the same table (same columns and column types, so decimals are stored
  the same way), ``row_version`` = 1 on insert, system columns filled;
* output: JSON via orjson with decimals as strings, ``ETag`` ``"id-row_version"``,
  ``Location`` on create, problem documents for errors;
* list: ``?stage=...&sort=-amount&limit=50[&cursor=...]``, keyset paging with an
  opaque cursor, NULL amounts first in descending order.

It does *not* write field history (the generated API writes one ``lw_history`` row
per create in the same transaction), check permissions by role, or look up the
published metadata version per request; those are what the platform adds.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
from decimal import Decimal
from typing import Any

import marshmallow as ma
import orjson
import sqlalchemy as sa
from flask import Flask, Response, request
from marshmallow import fields, validate

from loomwork.runtime.sqltypes import ExactDecimal, UTCDateTime

STAGES = ["prospecting", "qualification", "proposal", "negotiation", "won", "lost"]


class DealIn(ma.Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    amount = fields.Decimal(places=2, allow_none=True, allow_nan=False,
                            validate=validate.Range(min=0, max=Decimal(10) ** 12, max_inclusive=False))
    stage = fields.String(load_default="prospecting", validate=validate.OneOf(STAGES))
    probability = fields.Decimal(places=2, allow_none=True, allow_nan=False, validate=validate.Range(min=0, max=100))
    close_date = fields.Date(allow_none=True)


def _tables(schema: str | None) -> tuple[sa.Table, sa.Table, sa.Table]:
    md = sa.MetaData(schema=schema)
    deal = sa.Table(
        "deal", md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.Integer),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("updated_by", sa.Integer),
        sa.Column("owner_id", sa.Integer),
        sa.Column("row_version", sa.Integer, nullable=False),
        sa.Column("deleted_at", UTCDateTime),
        sa.Column("name", sa.Text),
        sa.Column("amount", ExactDecimal(14, 2)),
        sa.Column("stage", sa.String(100)),
        sa.Column("probability", ExactDecimal(7, 2)),
        sa.Column("close_date", sa.Date),
    )
    users = sa.Table("lw_user", md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("active", sa.Boolean))
    tokens = sa.Table(
        "lw_token", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer),
        sa.Column("token_hash", sa.String(64)),
        sa.Column("expires_at", UTCDateTime),
        sa.Column("revoked_at", UTCDateTime),
    )
    return deal, users, tokens


def make_engine(url: str) -> sa.Engine:
    """The same connection settings the platform uses for the dialect (pool, WAL, sync)."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                                  pool_size=8, max_overflow=8)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                           "busy_timeout=30000", "cache_size=-65536", "temp_store=MEMORY"):
                cur.execute(f"PRAGMA {pragma}")
            cur.close()

        return engine
    return sa.create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


class ApiError(Exception):
    def __init__(self, status: int, title: str, detail: str, errors: Any = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.errors = status, title, detail, errors


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError


def _json(doc: Any, status: int = 200, headers: dict | None = None, mimetype: str = "application/json") -> Response:
    return Response(orjson.dumps(doc, default=_default), status=status, headers=headers, mimetype=mimetype)


def _dump(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"], "created_at": row["created_at"].isoformat(), "created_by": row["created_by"],
        "updated_at": row["updated_at"].isoformat(), "updated_by": row["updated_by"],
        "owner_id": row["owner_id"], "row_version": row["row_version"],
        "name": row.get("name"), "amount": row.get("amount"), "stage": row.get("stage"),
        "probability": row.get("probability"),
        "close_date": row["close_date"].isoformat() if row.get("close_date") is not None else None,
    }


def create_handwritten_app(url: str, schema: str | None = None) -> Flask:
    """The baseline app over the database at ``url`` (tables in ``schema`` on PostgreSQL)."""
    engine = make_engine(url)
    deal, users, tokens = _tables(schema)
    deal_in = DealIn(unknown=ma.RAISE)
    app = Flask("handwritten")
    app.extensions["hw_engine"] = engine

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        doc = {"type": "about:blank", "title": exc.title, "status": exc.status, "detail": exc.detail}
        if exc.errors:
            doc["errors"] = exc.errors
        return _json(doc, exc.status, mimetype="application/problem+json")

    def authenticate(conn: sa.Connection) -> int:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "Unauthorized", "use Authorization: Bearer <token>")
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        row = conn.execute(
            sa.select(users.c.id, users.c.active, tokens.c.expires_at, tokens.c.revoked_at)
            .join(tokens, tokens.c.user_id == users.c.id).where(tokens.c.token_hash == digest)
        ).first()
        now = dt.datetime.now(dt.UTC)
        if row is None or row.revoked_at is not None or not row.active or (
                row.expires_at is not None and row.expires_at <= now):
            raise ApiError(401, "Unauthorized", "invalid API token")
        return row.id

    @app.post("/hw/deal")
    def create_deal():
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise ApiError(400, "Bad request", "send a JSON object")
        try:
            values = deal_in.load(data)
        except ma.ValidationError as exc:
            raise ApiError(422, "Unprocessable content", "invalid input", exc.messages) from None
        with engine.begin() as conn:
            uid = authenticate(conn)
            now = dt.datetime.now(dt.UTC)
            record = {**values, "created_at": now, "updated_at": now, "created_by": uid, "updated_by": uid,
                      "owner_id": uid, "row_version": 1}
            record["id"] = conn.execute(deal.insert().values(record)).inserted_primary_key[0]
        out = _dump(record)
        return _json(out, 201, {"ETag": f'"{out["id"]}-1"', "Location": f"/hw/deal/{out['id']}"})

    @app.get("/hw/deal/<int:deal_id>")
    def get_deal(deal_id: int):
        with engine.connect() as conn:
            authenticate(conn)
            row = conn.execute(sa.select(deal).where(deal.c.id == deal_id, deal.c.deleted_at.is_(None))
                               ).mappings().first()
        if row is None:
            raise ApiError(404, "Not found", f"no deal {deal_id}")
        return _json(_dump(row), 200, {"ETag": f'"{row["id"]}-{row["row_version"]}"'})

    @app.get("/hw/deal")
    def list_deals():
        args = request.args
        try:
            limit = int(args.get("limit", 50))
        except ValueError:
            raise ApiError(400, "Bad request", "limit must be a whole number") from None
        if not 1 <= limit <= 500:
            raise ApiError(400, "Bad request", "limit must be between 1 and 500")
        if args.get("sort", "-amount") != "-amount":
            raise ApiError(400, "Bad request", "only sort=-amount is offered")
        where = [deal.c.deleted_at.is_(None)]
        stage = args.get("stage")
        if stage is not None:
            if stage not in STAGES:
                raise ApiError(400, "Bad request", f"stage must be one of {', '.join(STAGES)}")
            where.append(deal.c.stage == stage)
        cursor = args.get("cursor")
        if cursor:
            try:
                amount, last_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
                amount = None if amount is None else Decimal(amount)
                last_id = int(last_id)
            except (ValueError, TypeError, ArithmeticError):
                raise ApiError(400, "Bad request", "malformed cursor") from None
            if amount is None:  # still among the NULL amounts, which come first
                where.append(sa.or_(deal.c.amount.is_not(None), deal.c.id < last_id))
            else:
                where.append(sa.or_(deal.c.amount < amount, sa.and_(deal.c.amount == amount, deal.c.id < last_id)))
        with engine.connect() as conn:
            authenticate(conn)
            rows = conn.execute(sa.select(deal).where(*where)
                                .order_by(deal.c.amount.desc().nulls_first(), deal.c.id.desc())
                                .limit(limit + 1)).mappings().all()
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = None
        if more:
            last = rows[-1]
            raw = orjson.dumps([None if last["amount"] is None else str(last["amount"]), last["id"]])
            next_cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        return _json({"data": [_dump(r) for r in rows], "next_cursor": next_cursor})

    return app
