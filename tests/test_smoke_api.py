"""End-to-end smoke test of the API over the sample package (both databases)."""


def test_create_get_list_update_delete(api):
    acc = api.post("/api/v1/data/account", json={"name": "Acme", "industry": "software"})
    assert acc.status_code == 201, acc.json
    deal = api.post("/api/v1/data/deal", json={"name": "Big", "account": acc.json["id"], "amount": "1234.50"})
    assert deal.status_code == 201, deal.json
    assert deal.json["number"].startswith("D-")
    assert deal.json["amount"] == "1234.50"
    got = api.get(f"/api/v1/data/deal/{deal.json['id']}")
    assert got.status_code == 200 and got.headers["ETag"] == f'"{deal.json["id"]}-1"'
    page = api.get("/api/v1/data/deal?account.industry=software&fields=name,amount")
    assert [r["name"] for r in page.json["data"]] == ["Big"]
    upd = api.patch(f"/api/v1/data/deal/{deal.json['id']}", json={"amount": 99}, headers={"If-Match": got.headers["ETag"]})
    assert upd.status_code == 200 and upd.json["amount"] == "99.00" and upd.json["row_version"] == 2
    stale = api.patch(f"/api/v1/data/deal/{deal.json['id']}", json={"amount": 98}, headers={"If-Match": got.headers["ETag"]})
    assert stale.status_code == 409
    assert stale.headers["Content-Type"] == "application/problem+json"
    assert api.delete(f"/api/v1/data/deal/{deal.json['id']}").status_code == 204
    assert api.get(f"/api/v1/data/deal/{deal.json['id']}").status_code == 404
