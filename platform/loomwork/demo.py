"""``loomwork demo``: an instance with the sample CRM package and sample records.

Running it again reuses the instance; the demo login is kept in the instance folder
(readable by its owner only) so it can be printed every time.
"""
from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from loomwork.runtime.context import Actor, Context
from loomwork.runtime.users import generate_password

from .plugin_manager import templates

#: The template the demo installs (found in the plugins' ``loomwork_templates``).
DEMO_TEMPLATE = "crm_sample"

COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka", "Tyrell", "Cyberdyne",
             "Soylent", "Vandelay", "Massive Dynamic", "Aperture", "Black Mesa", "Oceanic", "Duff", "Gringotts",
             "Monarch", "Pied Piper", "Nakatomi", "Weyland", "Oscorp", "LexCorp", "Dunder Mifflin", "Sterling Cooper",
             "Prestige", "Bluth", "Krusty", "Planet Express", "华为示例", "阿里示例", "腾讯示例", "美团示例"]
SUFFIXES = ["Ltd", "Inc", "Group", "GmbH", "Co", "Labs", "Holdings", "Systems"]
FIRST = ["Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "John", "Mei", "Wei", "Li"]
LAST = ["Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen", "Backus",
        "Wang", "Zhang", "Chen"]
STAGES = ["prospecting", "qualification", "proposal", "negotiation", "won", "lost"]
INDUSTRIES = ["software", "manufacturing", "retail", "finance", "other"]


def sample_records(n: int, seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    """About ``n`` records split over accounts, contacts and deals (deterministic)."""
    rnd = random.Random(seed)
    n_accounts = max(3, n // 6)
    accounts = []
    names = set()
    while len(accounts) < n_accounts:
        name = f"{rnd.choice(COMPANIES)} {rnd.choice(SUFFIXES)}"
        if name in names:
            name = f"{name} {len(accounts)}"
        names.add(name)
        accounts.append({"name": name, "industry": rnd.choice(INDUSTRIES),
                         "website": f"https://{name.split()[0].lower()}{len(accounts)}.example.com",
                         "phone": f"+1 555 {rnd.randint(100, 999)} {rnd.randint(1000, 9999)}",
                         "annual_revenue": str(Decimal(rnd.randint(100_000, 90_000_000)) / 100),
                         "employees": rnd.randint(5, 20000)})
    contacts = []
    for i in range(max(3, n // 3)):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        contacts.append({"first_name": first, "last_name": last, "email": f"{first}.{last}.{i}@example.com".lower(),
                         "account": rnd.randint(1, n_accounts)})
    deals = []
    today = dt.date.today()
    for i in range(max(3, n - len(accounts) - len(contacts))):
        stage = rnd.choice(STAGES)
        deals.append({"name": f"{rnd.choice(['Platform', 'Renewal', 'Pilot', 'Expansion', 'Support'])} #{i + 1}",
                      "account": rnd.randint(1, n_accounts), "contact": rnd.randint(1, len(contacts)),
                      "amount": f"{rnd.randint(1_000, 500_000)}.{rnd.randint(0, 99):02d}", "stage": stage,
                      "probability": {"won": "100", "lost": "0"}.get(stage, str(rnd.choice([10, 25, 50, 75]))),
                      "close_date": (today + dt.timedelta(days=rnd.randint(-60, 120))).isoformat(),
                      "tags": rnd.sample(["strategic", "renewal", "upsell"], rnd.randint(0, 2))})
        if stage == "lost":
            deals[-1]["lost_reason"] = rnd.choice(["price", "competitor", "timing", "no_decision"])
    return {"account": accounts, "contact": contacts, "deal": deals}


#: The demo's people: (username, full name, roles, manager). Sam's quote discounts go
#: to the admin (his manager) and, above 40%, to both finance users.
DEMO_USERS = (
    ("admin", "Demo Admin", ("admin",), None),
    ("sam", "Sam Sales", ("sales",), "admin"),
    ("fiona", "Fiona Finance", ("finance",), None),
    ("felix", "Felix Finance", ("finance",), None),
)


def setup_demo(state, records: int, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Create (or reuse) the demo tenant. Returns the admin's login (``username``,
    ``password``: every demo user's, ``token``: an API token of the admin) and ``users``:
    each user of the tenant as ``{username, full_name, roles}``, read from the tenant."""
    platform, services = state.platform, state.services
    tenant_name = state.settings.default_tenant
    login_file = Path(state.settings.instance_dir) / "demo-login.json"
    if platform.exists(tenant_name) and login_file.exists():
        echo(f"reusing the demo instance in {state.settings.instance_dir}/")
        login = json.loads(login_file.read_text())
    else:
        login = _create_demo(state, tenant_name, records, echo)
        login_file.write_text(json.dumps(login))
        login_file.chmod(0o600)
    ctx = Context(platform.tenant(tenant_name), Actor.system())
    login["users"] = [{"username": u.username, "full_name": u.full_name, "roles": sorted(u.roles)}
                      for u in services.users.list(ctx) if u.active]
    return login


def _create_demo(state, tenant_name: str, records: int, echo: Callable[[str], None]) -> dict[str, str]:
    platform, services = state.platform, state.services
    if platform.exists(tenant_name):
        platform.drop_tenant(tenant_name)
    tenant = platform.create_tenant(tenant_name, "Demo company")
    ctx = Context(tenant, Actor.system())
    password = generate_password()
    # First: it brings the roles. Found like any template, by name among the plugins'.
    version = services.packages.install(ctx, templates(state.plugins)[DEMO_TEMPLATE].load())
    echo(f"installed the sample CRM package (metadata version {version})")
    made = {}
    for username, full_name, roles, manager in DEMO_USERS:
        made[username] = services.users.create(ctx, username, password, roles=roles, full_name=full_name)
        if manager:
            services.users.set_manager(ctx, made[username].id, made[manager].id)
    admin = made["admin"]
    admin_ctx = Context(tenant, admin.actor())
    for obj, rows in sample_records(records).items():
        for start in range(0, len(rows), 500):
            services.records.bulk_create(admin_ctx, obj, rows[start:start + 500])
        echo(f"created {len(rows)} {obj} records")
    token = services.users.create_token(ctx, admin.id, "demo")
    return {"username": admin.username, "password": password, "token": token}
