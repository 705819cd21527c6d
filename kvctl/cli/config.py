"""`kvctl config`: manage named profiles (URLs) in the TOML config file."""

from __future__ import annotations

from typing import Annotated

import typer

from kvctl import config as cfg
from kvctl.cli.output import JsonOpt, json_doc, table
from kvctl.cli.usage import examples
from kvctl.url import StoreURL

app = typer.Typer(help="Manage profiles: named store URLs kept in the config file (mode 0600).", rich_markup_mode=None,
                  no_args_is_help=True, epilog=examples("kvctl config set prod redis://db:6379/0 --default",
                                                        "kvctl config list"))


def complete_profile(incomplete: str) -> list[str]:
    try:
        names = cfg.load(warn=False).profiles
    except Exception:
        return []
    return [n for n in sorted(names) if n.startswith(incomplete)]


NameArg = Annotated[str, typer.Argument(help="Profile name.", autocompletion=complete_profile)]


@app.command("list", epilog=examples(
    "kvctl config list",
    "kvctl config list --json",
))
def list_(as_json: JsonOpt = False) -> None:
    """List profiles (passwords redacted)."""
    conf = cfg.load()
    rows = [{"name": n, "url": cfg.describe(str(p.get("url", ""))), "default": n == conf.default}
            for n, p in sorted(conf.profiles.items())]
    if as_json:
        json_doc(rows)
    elif not rows:
        print(f"no profiles in {conf.path}; add one with `kvctl config set NAME URL`")
    else:
        table(str(conf.path), ["name", "url", "default"], [[r["name"], r["url"], r["default"]] for r in rows])


@app.command("set", epilog=examples(
    "kvctl config set prod redis://:secret@db:6379/0 --default",
    "kvctl config set local sqlite:///data/app.db",
))
def set_(
    name: NameArg,
    url: Annotated[str, typer.Argument(help="The store URL.")],
    default: Annotated[bool, typer.Option("--default", help="Also make it the default profile.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add or change a profile."""
    cfg.validate_profile_name(name)
    StoreURL.parse(url)  # refuse a malformed URL before it is saved
    conf = cfg.load()
    conf.profiles[name] = {**conf.profiles.get(name, {}), "url": url}
    if default:
        conf.default = name
    cfg.save(conf)
    if as_json:
        json_doc({"name": name, "url": cfg.describe(url), "default": conf.default == name})
    else:
        print(f"profile {name} = {cfg.describe(url)}" + (" (default)" if default else ""))


@app.command("remove", epilog=examples(
    "kvctl config remove staging",
    "kvctl config list                        # what is left",
))
def remove(name: NameArg, as_json: JsonOpt = False) -> None:
    """Remove a profile."""
    conf = cfg.load()
    conf.profile_url(name)  # one clear error when it does not exist
    del conf.profiles[name]
    if conf.default == name:
        conf.default = None
    cfg.save(conf)
    if as_json:
        json_doc({"name": name, "removed": True})


@app.command("default", epilog=examples(
    "kvctl config default prod",
    "kvctl config show                        # which store commands now use",
))
def default(name: NameArg, as_json: JsonOpt = False) -> None:
    """Make a profile the default store."""
    conf = cfg.load()
    conf.profile_url(name)
    conf.default = name
    cfg.save(conf)
    if as_json:
        json_doc({"name": name, "default": True})


@app.command("path", epilog=examples(
    "kvctl config path",
    "$EDITOR \"$(kvctl config path | sed -n 's/^config: //p')\"",
))
def path(as_json: JsonOpt = False) -> None:
    """Print the config file's path and the data and state directories."""
    if as_json:
        json_doc({"config": str(cfg.config_path()), "data": str(cfg.data_dir()), "state": str(cfg.state_dir())})
    else:
        print(f"config: {cfg.config_path()}\ndata:   {cfg.data_dir()}\nstate:  {cfg.state_dir()}")


@app.command("show", epilog=examples(
    "kvctl config show",
    "kvctl -u prod config show",
))
def show(as_json: JsonOpt = False) -> None:
    """Show which store a command would use now, and why."""
    import os

    from kvctl.cli.context import STATE

    if STATE.url:
        source = "--url"
    elif os.environ.get("KVCTL_URL"):
        source = "KVCTL_URL"
    elif cfg.load(warn=False).default:
        source = "default profile"
    else:
        source = "embedded default"
    url = cfg.describe(cfg.choose(STATE.url))
    if as_json:
        json_doc({"url": url, "source": source})
    else:
        print(f"{url} (from {source})")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="config")
