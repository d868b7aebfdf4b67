"""The ``loomwork`` command line (click). Plugins add commands through
``loomwork_register_commands``."""
from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from loomwork.metadata.errors import LoomworkError, NotFound, ValidationError
from loomwork.metadata.packages import load_package
from loomwork.runtime.context import Actor, Context
from loomwork.runtime.users import TOKEN_CACHE_SECONDS, generate_password


class Env:
    """Settings, plugins and services built lazily from the command's options."""

    def __init__(self, database_url: str | None, plugin_manager: Any = None) -> None:
        self.database_url = database_url
        #: The plugin manager the command line was built with (its commands came from
        #: it), handed to the app so both see the same plugins.
        self.plugin_manager = plugin_manager
        self._app = None

    @property
    def app(self):
        if self._app is None:
            from loomwork.app import create_app

            overrides = {"database_url": self.database_url} if self.database_url else {}
            try:
                self._app = create_app(overrides, plugin_manager=self.plugin_manager)
            except ImportError as exc:  # a plugin the settings name
                raise LoomworkError(_plugin_import_error(exc)) from None
        return self._app

    @property
    def state(self):
        return self.app.extensions["loomwork"]

    def ctx(self, tenant: str | None, as_user: str | None = None) -> Context:
        """The context a command acts in: as user ``as_user`` of the tenant (with that
        user's roles), else as the operator at the keyboard (:func:`operator`)."""
        name = tenant or self.state.settings.default_tenant
        t = self.state.platform.tenant(name)
        if as_user is None:
            return Context(t, operator())
        try:
            found = self.state.services.users.by_username(Context(t, Actor.system()), as_user)
        except NotFound:
            raise LoomworkError(f"--as: no user {as_user!r} in tenant {name}") from None
        if not found.active:
            raise LoomworkError(f"--as: user {as_user!r} is deactivated")
        return Context(t, found.actor())


def operator() -> Actor:
    """Whoever runs the command: an administrator named after the OS account
    (``os:alice``), so what they publish is recorded under that name, not "system"."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        name = f"uid{os.getuid()}"
    return Actor(None, f"os:{name}", Actor.system().roles)


def _fail(exc: LoomworkError) -> None:
    if not isinstance(exc, ValidationError):
        click.secho(f"error: {exc.message}", fg="red", err=True)
    else:
        click.secho(f"error: {exc.title.lower()}", fg="red", err=True)
        for path, msgs in exc.errors.items():
            for m in msgs:
                click.echo(f"  {path}: {m}" if path else f"  {m}", err=True)
    sys.exit(1)


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LoomworkError as exc:
            _fail(exc)


#: Where the root context keeps the commands plugins added (once per invocation).
_PLUGIN_COMMANDS = "loomwork.plugin_commands"
_PLUGIN_MANAGER = "loomwork.plugin_manager"


class RootGroup(Group):
    """The ``loomwork`` group: its own commands, and those plugins add through
    ``loomwork_register_commands``.

    The group exists before any app, so plugin commands are gathered when a command is
    first looked up (or listed), from the plugins the app registers too: the built-in
    ones, the ``plugins`` setting (file or ``LOOMWORK_PLUGINS``) and entry points. A
    command that runs no plugin lookup (a built-in one, by name) imports no plugin.
    """

    def _plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        meta = ctx.find_root().meta
        if _PLUGIN_COMMANDS not in meta:
            meta[_PLUGIN_COMMANDS], meta[_PLUGIN_MANAGER] = plugin_commands(self)
        return meta[_PLUGIN_COMMANDS]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugin_commands(ctx)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or self._plugin_commands(ctx).get(cmd_name)


def _plugin_import_error(exc: ImportError) -> str:
    return f"cannot load plugin {exc.name or ''}: {exc} (check the plugins setting or LOOMWORK_PLUGINS)"


def plugin_commands(cli: click.Group) -> tuple[dict[str, click.Command], Any]:
    """The commands the configured plugins register, by name, without changing ``cli``
    (each invocation may run with other settings), and the plugin manager they came
    from (the app of the invocation is built with it).

    :raises click.ClickException: when the settings or a plugin cannot be loaded, or a
        plugin's command has a built-in command's name.
    """
    from .config import load_settings
    from .plugin_manager import make_plugin_manager

    try:
        pm = make_plugin_manager(load_settings().plugin_list)
    except LoomworkError as exc:
        raise click.ClickException(exc.message) from None
    except ImportError as exc:
        raise click.ClickException(_plugin_import_error(exc)) from None
    # Plugins add to a stand-in holding the built-in commands, so they can see them.
    stand_in = click.Group(cli.name, commands=dict(cli.commands))
    pm.hook.loomwork_register_commands(cli=stand_in)
    added = {}
    for name, command in stand_in.commands.items():
        if cli.commands.get(name) is command:
            continue
        if name in cli.commands:
            raise click.ClickException(f"a plugin adds a command {name!r}, which is a built-in command's name")
        added[name] = command
    return added, pm


@click.group(cls=RootGroup)
@click.option("--database-url", envvar="LOOMWORK_DATABASE_URL", help="sqlite:///DIR or postgresql://...")
@click.pass_context
def main(ctx: click.Context, database_url: str | None) -> None:
    """Loomwork: metadata-driven business applications."""
    ctx.obj = Env(database_url, ctx.find_root().meta.get(_PLUGIN_MANAGER))


tenant_option = click.option("--tenant", "-t", default=None, help="Tenant name (default: the default tenant).")
as_option = click.option("--as", "as_user", default=None, metavar="USER",
                         help="Act as this user of the tenant (recorded as who published); "
                              "default: your OS user, as os:NAME.")
comment_option = click.option("--comment", "-m", default="", help="Why (kept in the version history).")


def _create_tenant(env: Env, name: str, title: str | None, admin: str, password: str | None) -> None:
    """Create tenant ``name`` with its administrator, or nothing: a tenant nobody can
    administer is no use. Prints the password when it made one up."""
    from loomwork.runtime.users import check_password_strength

    if password is not None:
        check_password_strength(password)
    chosen = password or generate_password()
    platform = env.state.platform
    created = platform.create_tenant(name, title)
    try:
        env.state.services.users.create(Context(created, operator()), admin, chosen, roles=("admin",))
    except LoomworkError:
        platform.drop_tenant(name)
        raise
    click.echo(f"tenant {name} created; administrator {admin}" + ("" if password else f" / {chosen}"))


admin_options = [
    click.option("--admin", default="admin", show_default=True, metavar="USERNAME",
                 help="The username of the tenant's administrator."),
    click.option("--password", default=None, help="The administrator's password (default: generated and printed)."),
]


def _with(options):
    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


@main.command()
@click.option("--tenant", "-t", default="main", show_default=True)
@_with(admin_options)
@click.pass_obj
def init(env: Env, tenant: str, admin: str, password: str | None) -> None:
    """Create the platform, a first tenant and its administrator."""
    _create_tenant(env, tenant, None, admin, password)


#: Background work in the server's own process (a one-process installation needs no worker).
_JOBS_OPTION = click.option("--jobs/--no-jobs", default=True, show_default=True,
                            help="Run background work (as loomwork worker does) in this process too.")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--debug/--no-debug", default=False)
@_JOBS_OPTION
@click.pass_obj
def serve(env: Env, host: str, port: int, debug: bool, jobs: bool) -> None:
    """Run the development server. In production use gunicorn:
    ``gunicorn 'loomwork:create_app()'`` (and ``loomwork worker`` for background work)."""
    if jobs:
        from .background import start

        start(env.state)
    from .serving import RequestHandler

    env.app.run(host=host, port=port, debug=debug, use_reloader=False, threaded=True, request_handler=RequestHandler)


@main.group()
def tenant() -> None:
    """Create and list tenants."""


@tenant.command("create")
@click.argument("name")
@click.option("--title", default=None)
@_with(admin_options)
@click.pass_obj
def tenant_create(env: Env, name: str, title: str | None, admin: str, password: str | None) -> None:
    """Create tenant NAME with its administrator. Its users sign in with NAME in the
    sign-in page's Workspace field (or at /login?tenant=NAME)."""
    _create_tenant(env, name, title, admin, password)


@tenant.command("list")
@click.pass_obj
def tenant_list(env: Env) -> None:
    for t in env.state.platform.tenants():
        click.echo(f"{t['name']}\t{t['title']}\t{t['created_at']:%Y-%m-%d %H:%M}")


@tenant.command("scripts")
@click.argument("name", required=False)
@click.option("--enable/--disable", default=None, help="Turn the tenant's scripts on or off.")
@click.pass_obj
def tenant_scripts(env: Env, name: str | None, enable: bool | None) -> None:
    """Show, or with --enable/--disable set, whether a tenant's scripts may run.

    Scripts are off for every tenant until an operator turns them on."""
    from loomwork.runtime.scripts import SCRIPTS_FLAG

    name = name or env.state.settings.default_tenant
    platform = env.state.platform
    if enable is not None:
        platform.set_flag(name, SCRIPTS_FLAG, enable)
    state = "enabled" if platform.flag(name, SCRIPTS_FLAG) else "disabled"
    click.echo(f"scripts are {state} for tenant {name}")


@main.group()
def script() -> None:
    """Run scripts by hand and read their run log."""


@script.command("run")
@click.argument("name")
@click.option("--record", "record_id", default=None, help="The id of the record to run it against.")
@click.option("--values", default=None, help="Field values as a JSON object (with or instead of --record).")
@click.option("--params", default=None, help="An action's parameters as a JSON object.")
@click.option("--dry", is_flag=True, required=True, help="Roll back whatever the script writes (required: "
              "scripts change data only through their triggers).")
@click.option("--tenant", default=None)
@click.pass_obj
def script_run(env: Env, name: str, record_id: str | None, values: str | None, params: str | None, dry: bool,
               tenant: str | None) -> None:
    """Dry-run script NAME and print what it would do, as JSON."""
    def parsed(text: str | None, what: str) -> dict | None:
        if text is None:
            return None
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ValidationError({what: [f"not JSON: {exc}"]}) from None
        if not isinstance(value, dict):
            raise ValidationError({what: ["must be a JSON object"]})
        return value

    outcome = env.state.services.scripts.dry_run(env.ctx(tenant), name, record_id, record=parsed(values, "values"),
                                                 params=parsed(params, "params"))
    click.echo(json.dumps(outcome, indent=2, default=str, ensure_ascii=False))
    if outcome["status"] != "ok" or outcome["errors"]:
        sys.exit(2)


@script.command("runs")
@click.option("--script", "name", default=None)
@click.option("--limit", default=20, show_default=True)
@click.option("--tenant", default=None)
@click.pass_obj
def script_runs(env: Env, name: str | None, limit: int, tenant: str | None) -> None:
    """The latest runs, newest first."""
    for run in env.state.services.scripts.runs(env.ctx(tenant), script=name, limit=limit):
        record = f"{run['object']}/{run['record_id']}" if run["record_id"] else (run["object"] or "-")
        flag = " (dry run)" if run["dry_run"] else ""
        click.echo(f"{run['started_at'][:19]}  {run['script']:<24} {run['trigger']:<13} {record:<20} "
                   f"{run['status']:<8} {run['duration_ms']:>6} ms{flag}  {run['error'] or ''}")


@main.command()
@click.option("--once", is_flag=True, help="Run what is due now, then stop.")
@click.option("--interval", default=15.0, show_default=True, help="Seconds between checks.")
@click.pass_obj
def worker(env: Env, once: bool, interval: float) -> None:
    """Run background work: due jobs (approval reminders and deadlines, notifications,
    recomputations) for every tenant, and scheduled scripts where scripts are on. Several
    workers may run side by side: each job and each scheduled run happens once."""
    import time

    from .background import run_once

    def say(line: str, error: bool) -> None:
        if error:
            click.secho(line, fg="red", err=True)
        else:
            click.echo(line)

    while True:
        run_once(env.state, say)
        if once:
            return
        time.sleep(interval)


@main.group()
def user() -> None:
    """Manage users, their roles and their API tokens."""


def _user_row(*columns: str) -> str:
    """A line of ``user list``: username, full name, email, roles, manager, status."""
    return " ".join(f"{c:<{w}}" for c, w in zip(columns[:-1], (16, 24, 28, 20, 16), strict=True)) + " " + columns[-1]


def _show_user(u, managers: dict[int, str]) -> str:
    """``u`` as a line of ``user list``; ``managers`` has the username of its manager."""
    return _user_row(u.username, u.full_name, u.email or "-", ",".join(sorted(u.roles)),
                     managers.get(u.manager_id, "-"), "active" if u.active else "inactive")


@user.command("create")
@click.argument("username")
@tenant_option
@click.option("--role", "roles", multiple=True, default=("user",), show_default=True,
              help="A role of the tenant (repeat for several).")
@click.option("--email", default=None)
@click.option("--full-name", default="")
@click.password_option(prompt="Password")
@click.pass_obj
def user_create(env: Env, username: str, tenant: str | None, roles: tuple[str, ...], email: str | None,
                full_name: str, password: str) -> None:
    """Create USERNAME with the given roles (each must be one of the tenant's roles)."""
    u = env.state.services.users.create(env.ctx(tenant), username, password, roles=roles, email=email,
                                        full_name=full_name)
    click.echo(f"user {u.username} created (id {u.id}, roles {', '.join(sorted(u.roles))})")


@user.command("list")
@tenant_option
@click.pass_obj
def user_list(env: Env, tenant: str | None) -> None:
    """Every user of the tenant: name, email, roles, manager, whether active."""
    users = env.state.services.users.list(env.ctx(tenant))
    names = {u.id: u.username for u in users}
    click.echo(_user_row("USERNAME", "FULL NAME", "EMAIL", "ROLES", "MANAGER", "STATUS"))
    for u in users:
        click.echo(_show_user(u, names))


@user.command("update")
@click.argument("username")
@tenant_option
@click.option("--role", "roles", multiple=True, help="Replace the roles with these (repeat for several).")
@click.option("--add-role", multiple=True, help="Give a role as well.")
@click.option("--remove-role", multiple=True, help="Take a role away.")
@click.option("--email", default=None, help="A new email address ('' removes it).")
@click.option("--full-name", default=None)
@click.option("--manager", default=None, help="The username of the user's manager ('' for none).")
@click.option("--locale", default=None, help="The user's language.")
@click.pass_obj
def user_update(env: Env, username: str, tenant: str | None, roles: tuple[str, ...], add_role: tuple[str, ...],
                remove_role: tuple[str, ...], email: str | None, full_name: str | None, manager: str | None,
                locale: str | None) -> None:
    """Change USERNAME's roles, email, full name, manager or language."""
    from loomwork.web.i18n import SUPPORTED

    ctx = env.ctx(tenant)
    users = env.state.services.users
    found = users.by_username(ctx, username)
    changes: dict[str, Any] = {}
    if roles and (add_role or remove_role):
        raise click.UsageError("give --role, or --add-role/--remove-role, not both")
    if roles or add_role or remove_role:
        changes["roles"] = (set(roles or found.roles) | set(add_role)) - set(remove_role)
    if email is not None:
        changes["email"] = email or None
    if full_name is not None:
        changes["full_name"] = full_name
    if manager is not None:
        changes["manager_id"] = users.by_username(ctx, manager).id if manager else None
    if locale is not None:
        changes.update(locale=locale, supported_locales=tuple(SUPPORTED))
    if not changes:
        raise click.UsageError("nothing to change: give --role, --add-role, --remove-role, --email, --full-name, "
                               "--manager or --locale")
    updated = users.update(ctx, found.id, **changes)
    click.echo(f"user {updated.username} updated")
    manager = users.get(ctx, updated.manager_id) if updated.manager_id else None
    click.echo(_show_user(updated, {manager.id: manager.username} if manager else {}))


def _activation_command(name: str, active: bool, help: str, done: str) -> None:
    """``user deactivate`` and ``user reactivate``: the same command but for ``active``."""

    @user.command(name, help=help)
    @click.argument("username")
    @tenant_option
    @click.pass_obj
    def command(env: Env, username: str, tenant: str | None) -> None:
        ctx = env.ctx(tenant)
        users = env.state.services.users
        users.set_active(ctx, users.by_username(ctx, username).id, active)
        click.echo(f"user {username} {done}")


_activation_command("deactivate", False, "Stop USERNAME signing in or using their API tokens (their records stay).",
                    "deactivated: their sessions and tokens stop working")
_activation_command("reactivate", True, "Let a deactivated USERNAME sign in again.", "reactivated")


@user.command("reset-password")
@click.argument("username")
@tenant_option
@click.option("--generate", is_flag=True, help="Make up a password and print it instead of asking for one.")
@click.option("--password", default=None, help="The new password (default: asked for, hidden).")
@click.pass_obj
def user_reset_password(env: Env, username: str, tenant: str | None, generate: bool, password: str | None) -> None:
    """Give USERNAME a new password; their sessions end (their API tokens stay: see ``user tokens``)."""
    if generate and password:
        raise click.UsageError("give --generate or --password, not both")
    ctx = env.ctx(tenant)
    users = env.state.services.users
    found = users.by_username(ctx, username)
    if generate:
        password = generate_password()
    elif password is None:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    users.set_password(ctx, found.id, password)
    click.echo(f"password of {username} reset" + (f": {password}" if generate else ""))


@user.command("token")
@click.argument("username")
@tenant_option
@click.option("--name", default="cli", show_default=True)
@click.pass_obj
def user_token(env: Env, username: str, tenant: str | None, name: str) -> None:
    """Create an API token for USERNAME and print it (it is shown only once)."""
    ctx = env.ctx(tenant)
    users = env.state.services.users
    click.echo(users.create_token(ctx, users.by_username(ctx, username).id, name))


def _token_row(*columns: str) -> str:
    """A line of ``user tokens``: id, name, hint, created, expires, status."""
    return " ".join(f"{c:<{w}}" for c, w in zip(columns[:-1], (6, 24, 8, 17, 17), strict=True)) + " " + columns[-1]


def _minute(when) -> str:
    return when.strftime("%Y-%m-%d %H:%M") if when else "-"


@user.command("tokens")
@click.argument("username")
@tenant_option
@click.pass_obj
def user_tokens(env: Env, username: str, tenant: str | None) -> None:
    """USERNAME's API tokens (never their secrets: HINT is a token's last characters), in UTC."""
    ctx = env.ctx(tenant)
    users = env.state.services.users
    click.echo(_token_row("ID", "NAME", "HINT", "CREATED", "EXPIRES", "STATUS"))
    for t in users.list_tokens(ctx, users.by_username(ctx, username).id):
        click.echo(_token_row(str(t["id"]), t["name"], t["hint"], _minute(t["created_at"]), _minute(t["expires_at"]),
                              f"revoked {_minute(t['revoked_at'])}" if t["revoked_at"] else "active"))


@user.command("revoke-token")
@click.argument("username")
@click.argument("token_id", type=click.IntRange(min=1))
@tenant_option
@click.pass_obj
def user_revoke_token(env: Env, username: str, token_id: int, tenant: str | None) -> None:
    """Revoke USERNAME's token TOKEN_ID (its ID in ``user tokens``); running servers stop
    taking it within seconds."""
    ctx = env.ctx(tenant)
    users = env.state.services.users
    users.revoke_token(ctx, token_id, user_id=users.by_username(ctx, username).id)
    click.echo(f"token {token_id} of {username} revoked (servers notice within {TOKEN_CACHE_SECONDS:g} s)")


@main.group()
def package() -> None:
    """Install packages (templates) into a tenant."""


@package.command("list")
@tenant_option
@click.pass_obj
def package_list(env: Env, tenant: str | None) -> None:
    """The templates plugins offer (packages installable by name), and the version of
    each the tenant has."""
    from loomwork.metadata.model import label_text
    from loomwork.runtime.packages import version_key

    from .plugin_manager import templates

    found = templates(env.state.plugins)
    if not found:
        click.echo("no templates: plugins offer them through loomwork_templates")
        return
    name = tenant or env.state.settings.default_tenant
    have = env.state.services.metadata.current(env.ctx(tenant)).doc.get("packages", {}) \
        if env.state.platform.exists(name) else {}
    rows = [("NAME", "VERSION", "TITLE", f"IN TENANT {name}")]
    for t in sorted(found.values(), key=lambda t: t.name):
        installed = (have.get(t.name) or {}).get("version")
        if installed is None:
            state = "not installed"
        elif installed == t.version:
            state = f"installed {installed}"
        else:
            newer = version_key(t.version) > version_key(installed)
            state = f"installed {installed}" + (" (upgrade available)" if newer else " (newer than this template)")
        rows.append((t.name, t.version, label_text(t.title, "en", t.name), state))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3])


def _package(env: Env, ref: str):
    """The package in folder ``ref``, else the template named ``ref``.
    :raises LoomworkError: when it is neither."""
    from .plugin_manager import templates

    if Path(ref).is_dir():
        return load_package(ref)
    found = templates(env.state.plugins)
    if ref in found:
        return found[ref].load()
    raise LoomworkError(f"{ref}: no package folder or template of that name (templates: "
                        f"{', '.join(sorted(found)) or 'none'}; see loomwork package list)")


@package.command("install")
@click.argument("ref", metavar="NAME_OR_PATH")
@tenant_option
@as_option
@comment_option
@click.option("--dry-run", is_flag=True, help="Show the plan and change nothing.")
@click.option("--allow-downgrade", is_flag=True, help="Install even if the tenant has a newer version.")
@click.pass_obj
def package_install(env: Env, ref: str, tenant: str | None, as_user: str | None, comment: str,
                    dry_run: bool, allow_downgrade: bool) -> None:
    """Install or upgrade a package (published as one metadata version): the folder
    NAME_OR_PATH, or the template of that name (see package list). An older version
    than the installed one is refused unless --allow-downgrade."""
    from loomwork.runtime.packages import DowngradeRefused

    ctx = env.ctx(tenant, as_user)
    pkg = _package(env, ref)
    services = env.state.services
    try:
        if dry_run:
            doc, _ = services.packages.merged(ctx, pkg, allow_downgrade=allow_downgrade)
            _print_plan(services.metadata.preview(ctx, doc).as_dict())
            return
        version = services.packages.install(ctx, pkg, comment=comment, allow_downgrade=allow_downgrade)
    except DowngradeRefused as exc:
        click.secho(f"error: {exc.package} {exc.installed} is installed and {exc.offered} is older; "
                    f"give --allow-downgrade to install it anyway", fg="red", err=True)
        sys.exit(1)
    click.echo(f"installed {pkg.name} {pkg.version}: metadata version {version}")


@main.group()
def meta() -> None:
    """Plan and apply metadata documents (YAML or JSON files of the whole tenant)."""


def _read_doc(path: str) -> dict:
    text = Path(path).read_text(encoding="utf-8")
    try:
        doc = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise LoomworkError(f"{path}: cannot parse: {exc}") from None
    if not isinstance(doc, dict):
        raise LoomworkError(f"{path}: must hold a mapping with objects/roles/packages")
    return doc


def _print_plan(plan: dict) -> None:
    ops = plan["operations"]
    if not ops:
        click.echo("nothing to change")
        return
    click.echo(f"plan from version {plan['old_version']} ({plan['change']}):")
    for op in ops:
        click.echo(f"  [{op['change']:7}] {op['description']}")
    for warning in plan.get("warnings", ()):
        click.secho(f"  warning: {warning['message']}", fg="yellow")


def _onto_head(env: Env, ctx: Context, path: str, doc: dict, force: bool) -> tuple[dict, int | None]:
    """PATH's document as it is to be published, merged with the versions published
    after the one it was exported from (its ``base_version``) unless ``--force``, and
    the version it was merged onto (None when not checked). Conflicts are reported
    three ways (base, yours, theirs) and stop the command."""
    from loomwork.metadata.merge import MergeConflict, split_export

    doc, base, fingerprint = split_export(doc)
    svc = env.state.services.metadata
    if base is None:
        click.echo(f"note: {path} names no base_version, so it replaces the current version as it is")
        return doc, None
    if force:
        click.echo(f"--force: {path} replaces the current version as it is (changes published after "
                   f"version {base} are not merged in)")
        return doc, None
    try:
        rebased = svc.rebase(ctx, doc, base, fingerprint)
    except MergeConflict as exc:
        _print_conflicts(path, exc)
        sys.exit(1)
    if rebased.merged:
        n = len(rebased.taken)
        click.echo(f"{path} was exported from version {rebased.base}; merged with version {rebased.head}, "
                   f"keeping {n} change{'s' if n != 1 else ''} published since:")
        for change in rebased.taken:
            click.echo(f"  {change['path']} ({change['op']})")
    return rebased.doc, rebased.head


def _shown(value: Any) -> str:
    if value is None:
        return "(not there)"
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 100 else text[:97] + "..."


def _print_conflicts(path: str, exc: Any) -> None:
    n = len(exc.conflicts)
    click.secho(f"error: {path} was exported from version {exc.base}; {n} change{'s' if n != 1 else ''} published "
                f"since (now version {exc.head}) conflict{'s' if n == 1 else ''} with it:", fg="red", err=True)
    for c in exc.conflicts:
        by = ", ".join(f"version {v['version']} by {v['by']} at {v['at'][:16]}" for v in c.changed_in)
        click.echo(f"  {c.path}: {c.summary}", err=True)
        click.echo(f"    base   (version {exc.base}): {_shown(c.base)}", err=True)
        click.echo(f"    yours  ({path}): {_shown(c.yours)}", err=True)
        click.echo(f"    theirs (version {exc.head}): {_shown(c.theirs)}" + (f"  [{by}]" if by else ""), err=True)
    click.echo(f"Resolve them in {path} (or export again and redo your change), or use --force to publish "
               f"{path} as it is, undoing those changes.", err=True)


force_option = click.option("--force", is_flag=True, help="Publish the file as it is, without merging the changes "
                            "published after its base_version (it undoes them).")


@meta.command("plan")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@tenant_option
@click.option("--update-dependents", is_flag=True, help="Plan as if expressions using renamed fields were rewritten.")
@force_option
@click.pass_obj
def meta_plan(env: Env, path: str, tenant: str | None, update_dependents: bool, force: bool) -> None:
    """Show what publishing PATH would change."""
    ctx = env.ctx(tenant)
    doc, _ = _onto_head(env, ctx, path, _read_doc(path), force)
    _print_plan(env.state.services.metadata.preview(ctx, doc, update_dependents=update_dependents).as_dict())


@meta.command("apply")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@tenant_option
@as_option
@comment_option
@click.option("--update-dependents", is_flag=True,
              help="Rewrite expressions that use a renamed field instead of refusing the rename.")
@force_option
@click.option("--keep-file", is_flag=True, help="Leave PATH as it is afterwards (by default a file from meta "
              "export is rewritten as the version published, to be edited further).")
@click.pass_obj
def meta_apply(env: Env, path: str, tenant: str | None, as_user: str | None, comment: str,
               update_dependents: bool, force: bool, keep_file: bool) -> None:
    """Publish PATH: validate, apply its plan and store a new version. A file from
    ``meta export`` names the version it was exported from; what was published since is
    merged in, and a conflicting change stops the command (``--force`` overrides).
    Afterwards such a file holds the version published, as ``meta export`` writes it."""
    from loomwork.metadata.merge import BASE_VERSION

    ctx = env.ctx(tenant, as_user)
    svc = env.state.services.metadata
    raw = _read_doc(path)
    doc, head = _onto_head(env, ctx, path, raw, force)
    _print_plan(svc.preview(ctx, doc, update_dependents=update_dependents).as_dict())
    version = svc.publish(ctx, doc, comment=comment, update_dependents=update_dependents, base_version=head)
    click.echo(f"metadata version {version}")
    if BASE_VERSION in raw and not keep_file:
        # The file is a working copy: it now names the version it matches (with what the
        # publish added, such as new fields placed on forms), so the next apply merges
        # from there rather than from the version it was first exported from.
        Path(path).write_text(_export_text(ctx, svc.current(ctx), json_format=path.endswith(".json")),
                              encoding="utf-8")
        click.echo(f"{path} now holds version {version} (base_version: {version})")


@meta.command("where-used")
@click.argument("object_name")
@click.argument("field")
@tenant_option
@click.pass_obj
def meta_where_used(env: Env, object_name: str, field: str, tenant: str | None) -> None:
    """List the expressions and roll-ups that read OBJECT_NAME.FIELD."""
    found = env.state.services.metadata.where_used(env.ctx(tenant), object_name, field)
    for item in found:
        click.echo(f"{item['path']}: {item['expression']}")
    if not found:
        click.echo(f"nothing uses {object_name}.{field}")


@meta.command("recompute")
@click.argument("object_name")
@click.option("--field", default=None, help="One stored formula or roll-up (default: all of the object's).")
@tenant_option
@click.pass_obj
def meta_recompute(env: Env, object_name: str, field: str | None, tenant: str | None) -> None:
    """Compute stored formulas and roll-ups again, in batches (after an interrupted publish)."""
    for key, rows in env.state.services.metadata.recompute(env.ctx(tenant), object_name, field).items():
        click.echo(f"{key}: {rows} rows")


@meta.command("export")
@tenant_option
@click.pass_obj
def meta_export(env: Env, tenant: str | None) -> None:
    """Print the current metadata document as YAML, headed by the version it is
    (``base_version``), which ``meta apply`` checks."""
    ctx = env.ctx(tenant)
    click.echo(_export_text(ctx, env.state.services.metadata.current(ctx)), nl=False)


def _export_text(ctx: Context, cur: Any, *, json_format: bool = False) -> str:
    """A stored version as ``meta export`` writes it: YAML (or JSON) headed by its base."""
    from loomwork.metadata.merge import export_doc

    doc = export_doc(cur.version, cur.doc)
    if json_format:
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    return (f"# Loomwork metadata of tenant {ctx.tenant.name}, version {cur.version}. `loomwork meta apply` "
            f"merges your edits with\n# changes published after base_version, or names the ones that conflict.\n"
            + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


@meta.command("versions")
@tenant_option
@click.pass_obj
def meta_versions(env: Env, tenant: str | None) -> None:
    """Every published version, newest first: when, who published it, how much changed, why."""
    click.echo(f"{'VER':>4}  {'PUBLISHED (UTC)':<19}  {'BY':<16} {'CHANGES':>11}  COMMENT")
    for v in env.state.services.metadata.versions(env.ctx(tenant)):
        s = v.summary()
        click.echo(f"{s['version']:>4}  {s['created_at'][:19]}  {s['created_by']:<16} {s['changes']:>3} changes  "
                   f"{s['comment']}")


@meta.command("rollback")
@click.argument("version", type=int)
@tenant_option
@as_option
@comment_option
@click.option("--dry-run", is_flag=True)
@click.pass_obj
def meta_rollback(env: Env, version: int, tenant: str | None, as_user: str | None, comment: str,
                  dry_run: bool) -> None:
    """Publish VERSION's metadata again, as a new version (default comment: "Roll back to version N")."""
    ctx = env.ctx(tenant, as_user)
    svc = env.state.services.metadata
    _print_plan(svc.preview_rollback(ctx, version).as_dict())
    if not dry_run:
        click.echo(f"metadata version {svc.rollback(ctx, version, comment=comment)}")


@main.command()
@click.option("--instance", default="instance", show_default=True, type=click.Path(file_okay=False))
@click.option("--records", default=300, show_default=True, help="How many sample records to create.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--no-serve", is_flag=True, help="Set up the instance and exit.")
@_JOBS_OPTION
def demo(instance: str, records: int, host: str, port: int, no_serve: bool, jobs: bool) -> None:
    """An embedded SQLite instance with the sample CRM package and sample data, served
    on --host/--port (``make demo PORT=5001`` passes the port), with its background work."""
    from loomwork.app import create_app

    from .demo import setup_demo
    from .serving import RequestHandler

    if not no_serve:
        _check_port(host, port)  # before the set-up, not after it
    app = create_app({"database_url": f"sqlite:///{instance}", "instance_dir": instance, "secure_cookies": False})
    login = setup_demo(app.extensions["loomwork"], records, echo=click.echo)
    url = f"http://{host}:{port}"
    click.secho("\nLoomwork demo is ready.", fg="green", bold=True)
    click.echo(f"  URL:       {url}/")
    click.echo("  Sign in as (username / password, roles, name):")
    width = max(len(u["username"]) for u in login["users"])
    roles_width = max(len(", ".join(u["roles"])) for u in login["users"])
    for u in login["users"]:
        click.echo(f"    {u['username']:<{width}} / {login['password']}   {', '.join(u['roles']):<{roles_width}}"
                   f"   {u['full_name']}")
    click.echo(f"  API token: {login['token']}  (of {login['username']})")
    click.echo(f"  Try:       curl -H 'Authorization: Bearer {login['token']}' {url}/api/v1/data/deal?limit=3")
    click.echo(f"  OpenAPI:   {url}/api/v1/openapi.json\n")
    if not no_serve and jobs:
        from .background import start

        start(app.extensions["loomwork"])
    if not no_serve:
        app.run(host=host, port=port, threaded=True, use_reloader=False, request_handler=RequestHandler)


def _check_port(host: str, port: int) -> None:
    """:raises LoomworkError: if nothing can listen on ``host:port`` (it is taken, say)."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise LoomworkError(f"cannot serve on {host}:{port} ({exc.strerror or exc}); choose another port with "
                            f"--port (make demo PORT=...)") from None


@main.group()
def debug() -> None:
    """Look inside: what the platform would do, without doing it."""


@debug.command("pipeline")
@click.argument("object_name")
@click.option("--operation", "-o", "operations", multiple=True,
              type=click.Choice(["create", "update", "delete", "restore"]),
              help="Only these operations (default: all four).")
@tenant_option
@click.pass_obj
def debug_pipeline(env: Env, object_name: str, operations: tuple[str, ...], tenant: str | None) -> None:
    """List the write pipeline's participants for OBJECT_NAME, in the order they run
    (built-ins and plugins'), and whether each has work for it."""
    ctx = env.ctx(tenant)
    services = env.state.services
    app = services.runtime.compiled(ctx.tenant)
    app.object(object_name)
    marks = {True: "", False: "  (nothing to do here)", None: ""}
    for op in operations or ("create", "update", "delete", "restore"):
        click.secho(f"{op}:", bold=True)
        for stage, name, summary, applies in services.records.pipeline.describe(op, app, object_name):
            line = f"  {stage:<18} {name:<20} {summary}{marks[applies]}"
            click.echo(click.style(line, dim=True) if applies is False else line)

