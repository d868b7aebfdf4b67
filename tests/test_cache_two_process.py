"""Two server processes over one database: a field added through one is served by the
other within a second, without a restart (the per-request metadata version check)."""
from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from loomwork.testing import wait_until_serving

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(method: str, url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_field_added_in_one_process_is_served_by_the_other(lw_database_url, tmp_path):
    from loomwork import create_app
    from loomwork.metadata.packages import load_package
    from loomwork.plugins import crm_sample
    from loomwork.runtime.context import Actor, Context

    namespace = f"lwt{secrets.token_hex(4)}"
    settings = {"database_url": lw_database_url, "namespace": namespace, "secret_key": "two-process",
                "instance_dir": str(tmp_path / "inst"), "secure_cookies": False}
    app = create_app(settings)
    st = app.extensions["loomwork"]
    procs: list[subprocess.Popen] = []
    try:
        ctx = Context(st.platform.create_tenant("main"), Actor.system())
        admin = st.services.users.create(ctx, "admin", "admin-password", roles=("admin",))
        token = st.services.users.create_token(ctx, admin.id, "test")
        st.services.packages.install(ctx, load_package(crm_sample.PATH))
        env = {**os.environ, **{f"LOOMWORK_{k.upper()}": str(v) for k, v in settings.items()}}
        exe = str(Path(sys.executable).with_name("loomwork"))
        urls = []
        for _ in range(2):
            port = _free_port()
            procs.append(subprocess.Popen([exe, "serve", "--port", str(port)], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        for url, proc in zip(urls, procs, strict=True):
            wait_until_serving(url, proc, deadline)
        a, b = urls

        status, acc = _call("POST", f"{b}/api/v1/data/account", token, {"name": "Acme"})
        assert status == 201, acc
        status, before = _call("GET", f"{b}/api/v1/data/account/{acc['id']}", token)
        assert status == 200 and "tier" not in before  # process B has compiled the old version

        status, meta = _call("GET", f"{a}/api/v1/meta/objects/account", token)
        obj = {k: v for k, v in meta.items() if k not in ("name", "version")}
        obj["fields"]["tier"] = {"type": "choice", "options": [{"value": "gold"}, {"value": "silver"}]}
        status, published = _call("PUT", f"{a}/api/v1/meta/objects/account", token, {"object": obj, "comment": "tier"})
        assert status == 200, published
        published_at = time.monotonic()

        seen_at = None
        while time.monotonic() - published_at < 5:
            status, rec = _call("PATCH", f"{b}/api/v1/data/account/{acc['id']}", token, {"tier": "gold"})
            if status == 200 and rec.get("tier") == "gold":
                seen_at = time.monotonic()
                break
            time.sleep(0.02)
        assert seen_at is not None, "process B never served the new field"
        assert seen_at - published_at < 1.0
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
            if proc.stdout:
                proc.stdout.close()
        st.platform.drop_all()
        st.platform.dispose()
