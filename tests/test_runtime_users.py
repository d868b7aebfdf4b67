"""Users, passwords and API tokens, inside each tenant's namespace."""
from __future__ import annotations

import datetime as dt
import hashlib
import time

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from loomwork.metadata.errors import (
    AuthenticationRequired,
    ConflictError,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from loomwork.runtime.context import Actor, Context
from loomwork.runtime.systables import tokens, users
from loomwork.runtime.users import token_tenant

PASSWORD = "correct horse battery"


CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def fast_hashing(monkeypatch):
    """Production Argon2 costs ~0.4 s a hash here; the logic tests use a cheap Argon2id.
    ``test_production_hash_parameters_and_rehash_on_login`` checks the real settings."""
    from loomwork.runtime import users as users_mod

    monkeypatch.setattr(users_mod, "_hasher", CHEAP)
    monkeypatch.setattr(users_mod, "_DUMMY_HASH", CHEAP.hash("not a password"))


@pytest.fixture
def svc(lw_services, fast_hashing):
    return lw_services.users


SALES = {"label": "Sales", "permissions": {"*": ["read"]}}


@pytest.fixture
def ann(svc, lw_services, lw_ctx):
    lw_services.metadata.publish(lw_ctx, {"roles": {"sales": SALES}}, comment="roles")
    return svc.create(lw_ctx, "ann", PASSWORD, roles=("sales", "user"), email="ann@example.com")


def stored_user(ctx, username):
    with ctx.tenant.read() as conn:
        return conn.execute(sa.select(users).where(users.c.username == username)).one()


def as_(ctx, user):
    return Context(ctx.tenant, user.actor())


def test_production_hash_parameters_and_rehash_on_login(lw_services, lw_ctx, monkeypatch):
    from loomwork.runtime import users as users_mod

    real = users_mod._hasher
    assert (real.memory_cost, real.time_cost) == (65536, 3)  # memory-hard: 64 MiB, 3 passes
    svc = lw_services.users
    monkeypatch.setattr(users_mod, "_hasher", CHEAP)
    svc.create(lw_ctx, "old", PASSWORD)
    assert "$m=1024,t=1" in stored_user(lw_ctx, "old").password_hash
    monkeypatch.setattr(users_mod, "_hasher", real)
    earlier = svc.start_session(lw_ctx, svc.by_username(lw_ctx, "old").id)
    signed_in = svc.authenticate(lw_ctx, "old", PASSWORD)  # a weaker hash is upgraded on the next login
    upgraded = stored_user(lw_ctx, "old").password_hash
    assert svc.user_for_session(lw_ctx, earlier).id == signed_in.id  # a rehash is no password change
    assert upgraded.startswith("$argon2id$v=19$m=65536,t=3,")
    assert svc.authenticate(lw_ctx, "old", PASSWORD).username == "old"


def test_password_is_stored_as_argon2id_hash(svc, lw_ctx, ann):
    row = stored_user(lw_ctx, "ann")
    assert row.password_hash.startswith("$argon2id$")
    assert PASSWORD not in row.password_hash
    assert PasswordHasher().verify(row.password_hash, PASSWORD)
    assert ann.roles == frozenset({"sales", "user"})
    assert ann.as_dict() == {"id": ann.id, "username": "ann", "email": "ann@example.com", "full_name": "ann",
                             "roles": ["sales", "user"], "locale": "en", "active": True, "manager_id": None,
                             "time_zone": None}
    # Two users with the same password get different hashes (salted).
    svc.create(lw_ctx, "bob", PASSWORD)
    assert stored_user(lw_ctx, "bob").password_hash != row.password_hash


def test_create_rules(svc, lw_ctx, ann):
    with pytest.raises(ValidationError) as info:
        svc.create(lw_ctx, "short", "tooshort")
    assert info.value.errors == {"password": ["must be at least 10 characters"]}
    with pytest.raises(ValidationError):
        svc.create(lw_ctx, "", PASSWORD)
    with pytest.raises(ConflictError):
        svc.create(lw_ctx, "ann", PASSWORD)
    with pytest.raises(PermissionDenied):
        svc.create(as_(lw_ctx, ann), "eve", PASSWORD)
    assert [u.username for u in svc.list(lw_ctx)] == ["ann"]
    assert svc.get(lw_ctx, ann.id).username == "ann"
    with pytest.raises(NotFound):
        svc.get(lw_ctx, 999)


def test_authenticate(svc, lw_ctx, ann):
    now = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC)
    ctx = Context(lw_ctx.tenant, lw_ctx.actor, clock=lambda: now)
    user = svc.authenticate(ctx, "ann", PASSWORD)
    assert user.id == ann.id and user.roles == ann.roles
    assert stored_user(lw_ctx, "ann").last_login_at == now


def test_wrong_password_and_unknown_user_get_the_same_error(svc, lw_ctx, ann):
    messages = []
    for username, password in (("ann", "wrong password!"), ("nobody", PASSWORD), ("ann", ""), ("ANN", PASSWORD),
                               ("ann", None), (None, PASSWORD), ("a\x00n", PASSWORD), ("a" * 5000, PASSWORD)):
        with pytest.raises(AuthenticationRequired) as info:
            svc.authenticate(lw_ctx, username, password)
        assert info.value.status == 401
        messages.append(info.value.message)
    assert set(messages) == {"wrong username or password"}
    assert stored_user(lw_ctx, "ann").last_login_at is None


def test_inactive_or_passwordless_users_cannot_sign_in(svc, lw_ctx, ann):
    svc.create(lw_ctx, "sso", None)
    with pytest.raises(AuthenticationRequired, match="wrong username or password"):
        svc.authenticate(lw_ctx, "sso", "not a password")
    with lw_ctx.tenant.write() as conn:
        conn.execute(users.update().where(users.c.id == ann.id).values(active=False))
    with pytest.raises(AuthenticationRequired, match="wrong username or password"):
        svc.authenticate(lw_ctx, "ann", PASSWORD)


def test_set_password(svc, lw_ctx, ann):
    me = as_(lw_ctx, ann)
    with pytest.raises(ValidationError) as info:
        svc.set_password(me, ann.id, "a new password", old_password="wrong one")
    assert info.value.errors == {"old_password": ["is not your current password"]}
    svc.set_password(me, ann.id, "a new password", old_password=PASSWORD)
    assert svc.authenticate(lw_ctx, "ann", "a new password").id == ann.id
    with pytest.raises(AuthenticationRequired):
        svc.authenticate(lw_ctx, "ann", PASSWORD)
    bob = svc.create(lw_ctx, "bob", PASSWORD)
    with pytest.raises(PermissionDenied):
        svc.set_password(me, bob.id, "hijacked password")
    svc.set_password(lw_ctx, ann.id, "admin reset password")  # administrators reset without the old one
    assert svc.authenticate(lw_ctx, "ann", "admin reset password").id == ann.id


def test_tokens_are_stored_hashed_and_open_their_user(svc, lw_ctx, ann):
    token = svc.create_token(as_(lw_ctx, ann), ann.id, "laptop")
    assert token.startswith("lw_acme.")
    assert token_tenant(token) == "acme"
    assert len(token) > 40
    with lw_ctx.tenant.read() as conn:
        row = conn.execute(sa.select(tokens)).one()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in (row.token_hash, row.prefix, row.name)
    assert token.split(".", 1)[1] not in row.token_hash
    assert svc.user_for_token(lw_ctx, token).id == ann.id
    listed = svc.list_tokens(as_(lw_ctx, ann), ann.id)
    assert [(t["id"], t["name"], t["revoked_at"]) for t in listed] == [(row.id, "laptop", None)]
    assert token.endswith(listed[0]["hint"])


def test_malformed_tokens_are_rejected(svc, lw_ctx, ann):
    good = svc.create_token(lw_ctx, ann.id, "t")
    for bad in ("", "lw_acme.", "lw_acme.nope", "Bearer x", "lw_acme." + "a" * 400, None, 5, good + "x", good[:-1],
                good.upper()):
        with pytest.raises(AuthenticationRequired):
            svc.user_for_token(lw_ctx, bad)


def test_token_of_tenant_a_is_rejected_in_tenant_b(svc, lw_platform, lw_ctx, ann):
    token = svc.create_token(lw_ctx, ann.id, "cli")
    beta = lw_platform.create_tenant("beta")
    beta_ctx = Context(beta, Actor.system())
    twin = svc.create(beta_ctx, "ann", PASSWORD)  # the same name and id in the other tenant
    assert twin.id == ann.id
    with pytest.raises(AuthenticationRequired):
        svc.user_for_token(beta_ctx, token)
    # Even with the other tenant's name in front, the secret is unknown there.
    forged = "lw_beta." + token.split(".", 1)[1]
    with pytest.raises(AuthenticationRequired):
        svc.user_for_token(beta_ctx, forged)
    with pytest.raises(AuthenticationRequired):
        svc.authenticate(beta_ctx, "ann", "wrong password!")
    assert svc.user_for_token(lw_ctx, token).id == ann.id  # still fine at home
    # A tenant whose name starts like another's does not match it either.
    acme2 = lw_platform.create_tenant("acme2")
    with pytest.raises(AuthenticationRequired):
        svc.user_for_token(Context(acme2, Actor.system()), token)


def test_revoked_expired_and_inactive_tokens_are_rejected(svc, lw_ctx, ann):
    me = as_(lw_ctx, ann)
    keep = svc.create_token(me, ann.id, "keep")
    revoke = svc.create_token(me, ann.id, "revoke")
    expire = svc.create_token(me, ann.id, "expire")
    ids = {t["name"]: t["id"] for t in svc.list_tokens(me, ann.id)}
    svc.revoke_token(me, ids["revoke"])
    with pytest.raises(AuthenticationRequired):
        svc.user_for_token(lw_ctx, revoke)
    assert svc.list_tokens(me, ann.id)[1]["revoked_at"] is not None
    with lw_ctx.tenant.write() as conn:
        conn.execute(tokens.update().where(tokens.c.id == ids["expire"])
                     .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    with pytest.raises(AuthenticationRequired):
        svc.user_for_token(lw_ctx, expire)
    assert svc.user_for_token(lw_ctx, keep).id == ann.id
    svc.set_active(lw_ctx, ann.id, False)
    with pytest.raises(AuthenticationRequired):
        svc.user_for_token(lw_ctx, keep)


def test_token_cache_sees_changes_from_other_processes_within_its_ttl(svc, lw_ctx, ann, monkeypatch):
    from loomwork.runtime import users as users_mod

    token = svc.create_token(as_(lw_ctx, ann), ann.id, "cached")
    assert svc.user_for_token(lw_ctx, token).id == ann.id
    with lw_ctx.tenant.write() as conn:  # as another process would: not through this service
        conn.execute(users.update().where(users.c.id == ann.id).values(active=False))
    assert svc.user_for_token(lw_ctx, token).id == ann.id  # still cached
    later = time.monotonic() + users_mod.TOKEN_CACHE_SECONDS + 0.1
    monkeypatch.setattr(users_mod.time, "monotonic", lambda: later)
    with pytest.raises(AuthenticationRequired):
        svc.user_for_token(lw_ctx, token)


def test_token_permissions(svc, lw_ctx, ann):
    bob = svc.create(lw_ctx, "bob", PASSWORD)
    me = as_(lw_ctx, ann)
    with pytest.raises(PermissionDenied):
        svc.create_token(me, bob.id, "not mine")
    with pytest.raises(PermissionDenied):
        svc.list_tokens(me, bob.id)
    bob_token = svc.create_token(lw_ctx, bob.id, "by admin")
    bob_id = svc.list_tokens(lw_ctx, bob.id)[0]["id"]
    with pytest.raises(NotFound):
        svc.revoke_token(me, bob_id)  # other people's tokens do not exist for you
    assert svc.user_for_token(lw_ctx, bob_token).id == bob.id
    with pytest.raises(ValidationError):
        svc.create_token(me, ann.id, "")
    with pytest.raises(NotFound):
        svc.create_token(lw_ctx, 999, "ghost")


def test_roles_must_be_the_tenants(svc, lw_services, lw_ctx, ann):
    """Defect 8 of issue 11: a role the metadata does not define is refused, naming what exists."""
    with pytest.raises(ValidationError) as info:
        svc.create(lw_ctx, "bob", PASSWORD, roles=("nonexistent",))
    assert info.value.errors == {"roles": ["no role 'nonexistent' in this tenant (it has admin, sales, user)"]}
    with pytest.raises(ValidationError, match="at least one role"):
        svc.create(lw_ctx, "bob", PASSWORD, roles=())
    with pytest.raises(ValidationError):
        svc.create(lw_ctx, "bob", PASSWORD, roles="sales")  # a text is not a list of roles
    assert [u.username for u in svc.list(lw_ctx)] == ["ann"]
    with pytest.raises(ValidationError, match="no role 'auditor'"):
        svc.update(lw_ctx, ann.id, roles=("sales", "auditor"))
    lw_services.metadata.publish(lw_ctx, {"roles": {"sales": SALES, "auditor": SALES}})
    assert svc.update(lw_ctx, ann.id, roles=("sales", "auditor")).roles == {"sales", "auditor"}
    # Deleting a role from the metadata does not stop an admin changing its holders.
    lw_services.metadata.publish(lw_ctx, {"roles": {"sales": SALES}})
    assert svc.update(lw_ctx, ann.id, full_name="Ann Lee").roles == {"sales", "auditor"}
    assert svc.update(lw_ctx, ann.id, roles=("sales", "auditor")).roles == {"sales", "auditor"}
    assert svc.update(lw_ctx, ann.id, roles=("sales",)).roles == {"sales"}
    with pytest.raises(ValidationError, match="no role 'auditor'"):
        svc.update(lw_ctx, ann.id, roles=("sales", "auditor"))  # once taken away, it is not granted again


def test_update_changes_what_it_is_given(svc, lw_ctx, ann):
    boss = svc.create(lw_ctx, "boss", PASSWORD, roles=("admin",))
    before = svc.get(lw_ctx, ann.id)
    session = svc.start_session(lw_ctx, ann.id)
    updated = svc.update(lw_ctx, ann.id, email="ann.lee@example.com", full_name="  Ann Lee ", manager_id=boss.id,
                         locale="zh-CN", supported_locales=("en", "zh-CN"))
    assert (updated.email, updated.full_name, updated.manager_id, updated.locale, updated.roles) == \
        ("ann.lee@example.com", "Ann Lee", boss.id, "zh-CN", before.roles)
    assert svc.user_for_session(lw_ctx, session).id == ann.id  # sessions survive a change that is not roles
    svc.update(lw_ctx, ann.id, roles=before.roles)
    assert svc.user_for_session(lw_ctx, session).id == ann.id  # nor do the same roles end them
    svc.update(lw_ctx, ann.id, roles=("user",))
    with pytest.raises(AuthenticationRequired):  # a change of roles ends them
        svc.user_for_session(lw_ctx, session)
    cleared = svc.update(lw_ctx, ann.id, email=None, manager_id=None, full_name="")
    assert (cleared.email, cleared.manager_id, cleared.full_name) == (None, None, "ann")
    for change, field in (({"email": "not an address"}, "email"), ({"email": 5}, "email"),
                          ({"manager_id": 999}, "manager_id"), ({"manager_id": ann.id}, "manager_id"),
                          ({"locale": "fr", "supported_locales": ("en", "zh-CN")}, "locale"),
                          ({"full_name": "x" * 201}, "full_name")):
        with pytest.raises(ValidationError) as info:
            svc.update(lw_ctx, ann.id, **change)
        assert list(info.value.errors) == [field], change
    svc.update(lw_ctx, boss.id, manager_id=ann.id)
    with pytest.raises(ValidationError, match="loop"):
        svc.update(lw_ctx, ann.id, manager_id=boss.id)
    with pytest.raises(PermissionDenied):
        svc.update(as_(lw_ctx, ann), ann.id, full_name="Me")
    with pytest.raises(NotFound):
        svc.update(lw_ctx, 999, full_name="Nobody")
    with pytest.raises(ValidationError, match="email"):
        svc.create(lw_ctx, "eve", PASSWORD, email="eve at example")
    assert svc.by_username(lw_ctx, "boss").id == boss.id
    with pytest.raises(NotFound, match="no user 'nobody'"):
        svc.by_username(lw_ctx, "nobody")


def test_the_last_active_administrator_stays(svc, lw_ctx, ann):
    boss = svc.create(lw_ctx, "boss", PASSWORD, roles=("admin",))
    with pytest.raises(ConflictError, match="last active administrator"):
        svc.update(lw_ctx, boss.id, roles=("user",))
    with pytest.raises(ConflictError, match="last active administrator"):
        svc.set_active(lw_ctx, boss.id, False)
    deputy = svc.create(lw_ctx, "deputy", PASSWORD, roles=("admin", "sales"))
    svc.set_active(lw_ctx, boss.id, False)
    assert not svc.get(lw_ctx, boss.id).active
    with pytest.raises(ConflictError, match="last active administrator"):
        svc.update(lw_ctx, deputy.id, roles=("sales",))
    svc.set_active(lw_ctx, boss.id, True)
    assert svc.update(lw_ctx, deputy.id, roles=("sales",)).roles == {"sales"}
    svc.set_active(lw_ctx, ann.id, False)  # anyone else may go
    assert svc.authenticate(lw_ctx, "boss", PASSWORD).id == boss.id
    with pytest.raises(AuthenticationRequired):
        svc.authenticate(lw_ctx, "ann", PASSWORD)


def test_refuse_sign_in_always_refuses_after_a_password_check(fast_hashing, monkeypatch):
    from loomwork.runtime import users as users_mod

    checked = []

    class Counting:
        def verify(self, stored, password):
            checked.append(password)
            return CHEAP.verify(stored, password)

    monkeypatch.setattr(users_mod, "_hasher", Counting())
    for password in ("guess", "not a password", None, 5):  # the dummy hash's own password too
        with pytest.raises(AuthenticationRequired, match="wrong username or password"):
            users_mod.refuse_sign_in(password)
    assert checked == ["guess", "not a password", "", ""]


def test_time_zones_are_the_users_and_checked(svc, lw_ctx, ann):
    """Issue 11, defect 12: a user's time zone (an IANA name) is set by them or an
    administrator; the browser's only while they have none."""
    assert ann.time_zone is None and ann.as_dict()["time_zone"] is None
    me = as_(lw_ctx, ann)
    assert svc.set_time_zone(me, ann.id, "Asia/Shanghai", if_unset=True) is True
    assert svc.get(lw_ctx, ann.id).time_zone == "Asia/Shanghai"
    assert svc.set_time_zone(me, ann.id, "Europe/Berlin", if_unset=True) is False  # a zone is kept
    assert svc.set_time_zone(me, ann.id, "Europe/Berlin") is True
    assert svc.get(lw_ctx, ann.id).time_zone == "Europe/Berlin"
    for bad in ("Mars/Olympus", "", "utc", "Europe/Berlin\x00", "x" * 200, None, 7):
        with pytest.raises(ValidationError) as info:
            svc.set_time_zone(me, ann.id, bad)
        assert info.value.errors == {"time_zone": ["is not a time zone; give an IANA name such as Europe/Berlin"]}
    other = svc.create(lw_ctx, "otto", PASSWORD)
    with pytest.raises(PermissionDenied):
        svc.set_time_zone(me, other.id, "UTC")
    assert svc.set_time_zone(lw_ctx, other.id, "UTC") is True  # an administrator may
    with pytest.raises(NotFound):
        svc.set_time_zone(lw_ctx, 9999, "UTC")


def test_a_language_counts_as_chosen_once_someone_chose_it(svc, lw_ctx, ann):
    """Until a user (or an administrator) chooses a language, pages follow the browser's."""
    assert ann.locale == "en" and ann.locale_chosen is False
    assert svc.create(lw_ctx, "zoe", PASSWORD, locale="zh-CN").locale_chosen is True
    svc.set_locale(as_(lw_ctx, ann), ann.id, "en", ("en", "zh-CN"))
    assert svc.get(lw_ctx, ann.id).locale_chosen is True  # English, chosen
    bob = svc.create(lw_ctx, "bob", PASSWORD)
    assert svc.update(lw_ctx, bob.id, locale="zh-CN", supported_locales=("en", "zh-CN")).locale_chosen is True
    # Users from before the flag (NULL) chose a language when theirs is not the default.
    with lw_ctx.tenant.write() as conn:
        conn.execute(users.update().where(users.c.username.in_(["ann", "bob"])).values(locale_chosen=None))
    assert svc.get(lw_ctx, ann.id).locale_chosen is False and svc.get(lw_ctx, bob.id).locale_chosen is True


def test_older_tenants_get_the_new_user_columns(lw_tenant):
    """time_zone and locale_chosen are added, nullable, to a user table made without them."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    from loomwork.runtime import systables
    from loomwork.runtime.context import utcnow

    def columns(conn):
        return {c["name"]: c for c in sa.inspect(conn).get_columns("lw_user", schema=_schema(conn))}

    with lw_tenant.write() as conn:
        ops = Operations(MigrationContext.configure(connection=conn))
        for name in ("time_zone", "locale_chosen"):
            ops.drop_column("lw_user", name, schema=_schema(conn))
    with lw_tenant.write() as conn:
        assert not {"time_zone", "locale_chosen"} & set(columns(conn))
        systables.upgrade(conn, utcnow())
        have = columns(conn)
    assert have["time_zone"]["nullable"] and have["locale_chosen"]["nullable"]


def _schema(conn):
    """The tenant's schema on PostgreSQL (the inspector does not apply schema_translate_map)."""
    return (conn.get_execution_options().get("schema_translate_map") or {}).get(None)


# -- sessions ---------------------------------------------------------------------------
def test_sessions_are_rows_of_digests_that_signing_out_deletes(svc, lw_ctx, ann):
    from loomwork.runtime.systables import sessions

    secret = svc.start_session(lw_ctx, ann.id)
    with lw_ctx.tenant.read() as conn:
        row = conn.execute(sa.select(sessions)).one()
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest() and row.user_id == ann.id
    assert svc.user_for_session(lw_ctx, secret) == svc.get(lw_ctx, ann.id)
    other = svc.start_session(lw_ctx, ann.id)
    svc.end_session(lw_ctx, secret)
    svc.end_session(lw_ctx, secret)  # twice: nothing to end
    for bad in (secret, "", None, 5, "x" * 101, secret + "x", other.upper()):
        with pytest.raises(AuthenticationRequired):
            svc.user_for_session(lw_ctx, bad)
    assert svc.user_for_session(lw_ctx, other).id == ann.id  # the user's other session stays


def test_an_idle_session_ends_and_use_moves_its_end_in_few_writes(svc, lw_ctx, ann):
    from loomwork.runtime.context import Clock
    from loomwork.runtime.systables import sessions
    from loomwork.runtime.users import SESSION_IDLE, SESSION_RENEW

    clock = Clock(dt.datetime(2030, 1, 1, 9, 0, tzinfo=dt.UTC))
    ctx = Context(lw_ctx.tenant, Actor.system(), clock=clock)

    def ends():
        with ctx.tenant.read() as conn:
            return conn.execute(sa.select(sessions.c.expires_at)).scalar_one()

    secret = svc.start_session(ctx, ann.id)
    first = ends()
    assert first == clock() + SESSION_IDLE
    clock.advance(seconds=SESSION_RENEW.total_seconds() - 1)
    svc.user_for_session(ctx, secret)
    assert ends() == first  # not written yet
    clock.advance(seconds=2)
    svc.user_for_session(ctx, secret)
    assert ends() == clock() + SESSION_IDLE  # moved on
    clock.advance(seconds=SESSION_IDLE.total_seconds() - 1)
    assert svc.user_for_session(ctx, secret).id == ann.id
    clock.advance(seconds=SESSION_IDLE.total_seconds())
    with pytest.raises(AuthenticationRequired):
        svc.user_for_session(ctx, secret)
    svc.start_session(ctx, ann.id)  # opening a session clears those that ended
    with ctx.tenant.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(sessions)).scalar_one() == 1


def test_password_changes_and_deactivation_end_sessions(svc, lw_ctx, ann):
    me = as_(lw_ctx, ann)
    mine, other = svc.start_session(lw_ctx, ann.id), svc.start_session(lw_ctx, ann.id)
    token = svc.create_token(me, ann.id, "kept")
    svc.set_password(me, ann.id, "a new password", old_password=PASSWORD, keep_session=mine)
    assert svc.user_for_session(lw_ctx, mine).id == ann.id
    with pytest.raises(AuthenticationRequired):
        svc.user_for_session(lw_ctx, other)
    assert svc.user_for_token(lw_ctx, token).id == ann.id  # a password change keeps API tokens
    # An administrator's reset keeps none of the user's sessions, even one named to keep.
    svc.set_password(lw_ctx, ann.id, "an admin's password", keep_session=mine)
    with pytest.raises(AuthenticationRequired):
        svc.user_for_session(lw_ctx, mine)
    again = svc.start_session(lw_ctx, ann.id)
    svc.set_active(lw_ctx, ann.id, False)
    svc.set_active(lw_ctx, ann.id, True)
    with pytest.raises(AuthenticationRequired):  # reactivating opens no old session
        svc.user_for_session(lw_ctx, again)
    assert svc.user_for_token(lw_ctx, token).id == ann.id  # tokens work again with the user


def test_a_session_opens_only_its_tenant(svc, lw_platform, lw_ctx, ann):
    secret = svc.start_session(lw_ctx, ann.id)
    beta = Context(lw_platform.create_tenant("beta"), Actor.system())
    svc.create(beta, "ann", PASSWORD)  # the same id there
    with pytest.raises(AuthenticationRequired):
        svc.user_for_session(beta, secret)


def test_older_tenants_get_the_session_table(lw_database_url, lw_platform, lw_tenant, svc):
    from loomwork.runtime.systables import sessions
    from loomwork.runtime.tenancy import Platform

    with lw_tenant.write() as conn:
        sessions.drop(conn)
    upgraded = Platform(lw_database_url, namespace=lw_platform.namespace)  # a process started after the upgrade
    try:
        ctx = Context(upgraded.tenant(lw_tenant.name), Actor.system())
        user = svc.create(ctx, "ann", PASSWORD)
        assert svc.user_for_session(ctx, svc.start_session(ctx, user.id)).id == user.id
    finally:
        upgraded.dispose()


def test_revoking_a_token_checks_whose_it_is_and_keeps_the_first_time(svc, lw_ctx, ann):
    bob = svc.create(lw_ctx, "bob", PASSWORD)
    svc.create_token(lw_ctx, ann.id, "a")
    token_id = svc.list_tokens(lw_ctx, ann.id)[0]["id"]
    with pytest.raises(NotFound):
        svc.revoke_token(lw_ctx, token_id, user_id=bob.id)  # not bob's
    assert svc.list_tokens(lw_ctx, ann.id)[0]["revoked_at"] is None
    svc.revoke_token(lw_ctx, token_id, user_id=ann.id)
    first = svc.list_tokens(lw_ctx, ann.id)[0]["revoked_at"]
    svc.revoke_token(lw_ctx, token_id)
    assert svc.list_tokens(lw_ctx, ann.id)[0]["revoked_at"] == first
    for bad in (0, -1, 2**31, 2**63, "1", True, None):
        with pytest.raises(NotFound):
            svc.revoke_token(lw_ctx, bad)
