"""The command line's conventions, checked over every command (the tree is walked, so a new
command is checked without being listed here):

- every command's --help has an Examples section with at least two command lines;
- flags show as flags (no ``<bool>``), values by name, one meaning per short option;
- every usage error is one ``kvctl: error:`` line in kvctl's words, exit 2;
- ``kvctl`` alone prints the help and exits 0; ``-V`` prints the version.
"""

from __future__ import annotations

from typing import Any

import pytest
import typer

from kvctl.cli.app import app, main
from kvctl.cli.usage import polish
from kvctl.testing.cli import run_kvctl


def command_tree() -> Any:
    root = typer.main.get_command(app)
    polish(root)
    return root


def leaves(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    subs = getattr(command, "commands", None)
    if not subs:
        return [(path, command)]
    return [leaf for name, sub in sorted(subs.items()) for leaf in leaves(sub, (*path, name))]


COMMANDS = [path for path, _ in leaves(command_tree())]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    out = capsys.readouterr()
    return int(exit_.value.code or 0), out.out, out.err


def test_the_tree_has_every_command() -> None:
    assert {("get",), ("scan",), ("migrate",), ("snapshot", "restore"), ("config", "show")} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_help_has_examples_and_shows_flags_as_flags(path: tuple[str, ...],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *path, "--help")
    assert code == 0
    examples = out.split("Examples:", 1)
    assert len(examples) == 2, out
    lines = [line.strip() for line in examples[1].splitlines() if line.strip()]
    assert len(lines) >= 2 and all(line.startswith(("kvctl ", "gunzip ", "$EDITOR ")) for line in lines), lines
    assert "<bool>" not in out and "<str>" not in out and "{" not in out.split("\n", 1)[0], out


def test_one_meaning_per_short_option() -> None:
    meanings: dict[str, set[str]] = {}
    for _, command in leaves(command_tree()):
        for param in command.params:
            shorts = [o for o in getattr(param, "opts", []) if not o.startswith("--")]
            longs = [o for o in getattr(param, "opts", []) if o.startswith("--")]
            for short in shorts:
                meanings.setdefault(short, set()).update(longs)
    clashes = {short: longs for short, longs in meanings.items() if len(longs) > 1}
    assert not clashes
    assert meanings["-n"] == {"--dry-run"} and meanings["-f"] == {"--format"} and meanings["-q"] == {"--quiet"}
    assert meanings["-w"] == {"--workers"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "--limit", "-1"], "--limit: must be at least 0 (see 'kvctl scan --help')"),
        (["scan", "--limit", "x"], "--limit: must be a whole number"),
        (["--keys", "bogus", "get", "x"], "--keys: 'bogus' is not one of 'text', 'hex', 'base64'"),
        (["get"], "missing KEY (see 'kvctl get --help')"),
        (["scan", "--lim", "3"], "unknown option --lim (did you mean --limit?)"),
        (["nosuch"], "unknown command 'nosuch' (see 'kvctl --help')"),
        (["snapshot", "nosuch"], "unknown command 'nosuch' (see 'kvctl snapshot --help')"),
        (["ttl", "a", "b"], "unexpected argument(s): b"),
        (["scan", "--limit"], "--limit needs a value"),
        (["snapshot", "create"], "missing --output"),
        (["set", "k", "v", "--ttl", "5M"], "ambiguous duration '5M'"),
        (["nosuch2", "x"], "unknown command 'nosuch2'"),
        (["imprt", "k"], "unknown command 'imprt' (did you mean 'import'?)"),
        (["snapshot", "create", "-o", "x.kvs", "-u", "memory://"],
         "-u is a global option: give it before the command (kvctl -u ... snapshot create ...)"),
    ],
)
def test_usage_errors_are_one_line_in_kvctls_words(args: list[str], message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-u", "memory://", *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("kvctl: error: ") and message in err, err
    assert "Error:" not in err and "Usage:" not in err and "Input should" not in err and out == ""


def test_kvctl_alone_prints_help_and_exits_0() -> None:
    alone = run_kvctl(None, )
    assert alone.returncode == 0 and alone.stdout.startswith("Usage: kvctl") and alone.stderr == ""
    group = run_kvctl(None, "snapshot")
    assert group.returncode == 0 and "restore" in group.stdout


def test_version_short_and_long() -> None:
    from kvctl import __version__

    assert run_kvctl(None, "-V").stdout == run_kvctl(None, "--version").stdout == f"kvctl {__version__}\n"
