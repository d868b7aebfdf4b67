"""Metric: a generated list page of 50 rows at 1M rows (100k quick), server time.

Setup (not measured): the benchmark ``deal`` object plus an ``account`` object it looks
up (so the page fetches lookup titles, as real lists do), 1,000 accounts, the deals
bulk-loaded with Core; a signed-in non-admin browser session.

Measured, side by side in the same rounds through Flask's test client (in process, so
the time is the server's: routing, session, metadata check, query, titles, locale
formatting, Jinja rendering):
- the HTML page ``/app/deal?stage=won&sort=-amount&columns=...`` (50 rows, 6 columns
  with a lookup, currency, percent, choice and date), and
- the JSON API for the same rows ``/api/v1/data/deal?stage=won&sort=-amount&limit=50``,
whose ratio shows what rendering a page costs over serialising JSON. The page is also
measured in Simplified Chinese and on the second page (cursor).
"""
from __future__ import annotations

import copy
import random
import re
from html import unescape

from bench_common import (
    BENCH_DOC,
    SEED,
    Result,
    backend,
    bulk_load,
    deal_rows,
    log,
    median,
    percentile,
    sample_ms,
    vacuum_analyze,
)

TARGET_MS = 30.0
ACCOUNTS = 1_000
COLUMNS = "name,account,amount,probability,stage,close_date"
PAGE = f"/app/deal?stage=won&sort=-amount&page_size=50&columns={COLUMNS}"
API = "/api/v1/data/deal?stage=won&sort=-amount&limit=50"


def _doc() -> dict:
    doc = copy.deepcopy(BENCH_DOC)
    doc["objects"]["account"] = {"label": "Account", "title_field": "name", "fields": {
        "name": {"type": "text", "required": True, "max_length": 200}}}
    doc["objects"]["deal"]["fields"]["account"] = {"type": "lookup", "target": "account", "on_delete": "set_null"}
    return doc


def _rows(n: int):
    rnd = random.Random(SEED + 7)
    for row in deal_rows(n):
        row["account"] = rnd.randint(1, ACCOUNTS)
        yield row


def _sign_in(client, username: str, password: str) -> None:
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    resp = client.post("/login", data={"username": username, "password": password, "csrf_token": csrf})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]


def run(kind: str, rows: int, quick: bool) -> list[Result]:
    from loomwork import create_app
    from loomwork.runtime.context import Actor, Context

    samples = 60 if quick else 150
    out: list[Result] = []
    with backend(kind) as b:
        app = create_app({"database_url": b.url, "secret_key": "bench", "secure_cookies": False,
                          **({"instance_dir": str(b.root)} if b.root else {})})
        st = app.extensions["loomwork"]
        try:
            tenant = st.platform.create_tenant("main")
            ctx = Context(tenant, Actor.system())
            st.services.metadata.publish(ctx, _doc(), comment="benchmark objects")
            app_c = st.services.runtime.compiled(tenant)
            st.services.records.bulk_create(ctx, "account", [{"name": f"Account {i:04d}"} for i in range(ACCOUNTS)])
            log(f"{kind}: ui_list: loading {rows:,} deals")
            bulk_load(tenant, app_c.object("deal").table, rows, rows=_rows(rows))
            vacuum_analyze(tenant)
            vacuum_analyze(tenant, "account")
            user = st.services.users.create(ctx, "bench", "bench-password", roles=("user",))
            token = st.services.users.create_token(ctx, user.id, "bench")
            page_client = app.test_client()
            _sign_in(page_client, "bench", "bench-password")
            zh_client = app.test_client()
            _sign_in(zh_client, "bench", "bench-password")
            api_client = app.test_client()
            auth = {"Authorization": f"Bearer {token}"}

            first = page_client.get(PAGE)
            html = first.get_data(as_text=True)
            assert first.status_code == 200 and html.count('class="row-link"') == 50, html[:2000]
            assert "Account " in html, "lookup titles are on the page"
            next_href = unescape(re.search(r'rel="next" href="([^"]+)"', html).group(1))
            api_rows = api_client.get(API, headers=auth).get_json()["data"]
            assert [str(r["id"]) for r in api_rows] == re.findall(r'name="ids" value="(\d+)"', html)

            def page():
                assert page_client.get(PAGE).status_code == 200

            def page2():
                assert page_client.get(next_href).status_code == 200

            def api():
                assert api_client.get(API, headers=auth).status_code == 200

            # Chinese: the same user with zh-CN (set after the English session signed in).
            st.services.users.set_locale(Context(tenant, user.actor()), user.id, "zh-CN", {"en": 1, "zh-CN": 1})

            def page_zh():
                assert zh_client.get(PAGE).status_code == 200

            log(f"{kind}: ui_list: {samples} samples per case, interleaved")
            timings: dict[str, list[float]] = {"page": [], "api": [], "page2": [], "page_zh": []}
            for _ in range(samples // 10):
                for name, fn in (("page", page), ("api", api), ("page2", page2), ("page_zh", page_zh)):
                    timings[name].extend(sample_ms(fn, 10, warmup=2))
            p50 = {k: median(v) for k, v in timings.items()}
            p95 = {k: percentile(v, 95) for k, v in timings.items()}
            ratio = p50["page"] / p50["api"]
            worst = max(p50["page"], p50["page2"], p50["page_zh"])
            out.append(Result(
                f"ui_list.{kind}",
                f"page p50 {p50['page']:.1f} ms (p95 {p95['page']:.1f}) | next page {p50['page2']:.1f} | "
                f"zh-CN {p50['page_zh']:.1f} | API JSON {p50['api']:.1f}",
                f"{ratio:.2f}x page/API",
                f"<= {TARGET_MS:.0f} ms p50 at {rows:,} rows",
                worst <= TARGET_MS,
                {"p50_ms": p50, "p95_ms": p95, "samples": timings, "rows": rows},
            ))
        finally:
            st.platform.drop_all()
            st.platform.dispose()
    return out
