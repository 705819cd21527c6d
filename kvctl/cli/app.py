"""The kvctl command line: global options, command registration, and error handling."""

from __future__ import annotations

import gc
import sys
from types import FrameType
from typing import Annotated

import typer

from kvctl import __version__
from kvctl.cli import admin, bench, config, diff, dump, expiry, keys, migrate, snapshot, sync
from kvctl.cli.context import STATE, scrub
from kvctl.cli.output import (
    EXIT_BROKEN_PIPE,
    OutputError,
    discard_stdout,
    error_kind,
    fail,
    guard_stdout,
    show_warning,
)
from kvctl.cli.usage import describe, examples, polish
from kvctl.codec import KeyEncoding, ValueEncoding

HELP = (
    "kvctl: administer, migrate, snapshot, sync and benchmark key-value stores.\n\n"
    "The store is chosen by --url/-u (a URL or a profile name), else $KVCTL_URL, else the default "
    "profile, else an embedded SQLite store in your data directory (no server needed).\n\n"
    "An application's own SQL table (sqlite://, libsql://, postgresql://) is read as a store with "
    "?table=T&key=COLUMNS (mapped mode: read-only unless write=true; ?table=* lists the tables "
    "with a URL for each).\n\n"
    "Exit codes: 0 ok; 1 key not found or stores differ; 2 usage or bad URL; 3 plugin failed to load; "
    "4 unsupported by the backend; 5 over a size limit; 6 conflict; 7 locked; 8 incomplete copy; "
    "9 change feed gap; "
    "65 corrupt data; 69 server unavailable; 70 internal error; 74 I/O error; 77 auth failed; "
    "130 interrupted (143 by SIGTERM); 141 the reader of stdout went away (kvctl ... | head)."
)

app = typer.Typer(
    name="kvctl",
    help=HELP,
    no_args_is_help=True,
    epilog=examples(
        "kvctl set greeting hello && kvctl get greeting",
        "kvctl -u redis://localhost:6379/0 scan --prefix user: --limit 20",
        "kvctl migrate sqlite:///data/app.db redis://localhost:6379/0",
        "kvctl -u 'sqlite:///srv/app.db?table=*' scan",
    ),
    rich_markup_mode=None,  # plain help, as git and gh print it: flags shown as flags
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"kvctl {__version__}")
        raise typer.Exit()


def _complete_url(incomplete: str) -> list[str]:
    names = config.complete_profile(incomplete)
    try:
        from kvctl.registry import schemes

        names += [f"{s}://" for s in sorted(schemes()) if s.startswith(incomplete)]
    except Exception:
        pass
    return names


@app.callback()
def options(
    url: Annotated[str | None, typer.Option(
        "--url", "-u", help="Store URL or profile name.", autocompletion=_complete_url,
        show_default=False)] = None,
    keys: Annotated[KeyEncoding, typer.Option(
        "--keys", help="How keys are typed and shown.")] = "text",
    values: Annotated[ValueEncoding, typer.Option(
        "--values", help="How values are typed and shown (raw: the exact bytes).")] = "raw",
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show a traceback on errors (before the command: kvctl --debug get K).")] = False,
    version: Annotated[bool, typer.Option(
        "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    STATE.url, STATE.key_encoding, STATE.value_encoding, STATE.debug = url, keys, values, debug


# One module per command group, in the order `kvctl --help` lists them; each imports its engine
# inside the command, so `kvctl --help` imports none.
COMMAND_GROUPS = (keys, expiry, admin, config, migrate, diff, dump, snapshot, bench, sync)
for _module in COMMAND_GROUPS:
    _module.register(app)
try:
    from kvctl.cli.coercion import quicken
except ImportError:  # another typer's internals: its own converters, only a slower start
    pass
else:
    quicken()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: every failure becomes one line on stderr and a documented exit code.

    Set up once, here: every Python warning prints as one ``kvctl: warning:`` line, and every
    write to standard output goes through one guard, so a full disk is exit 74 and a reader that
    went away (``kvctl scan | head``) a quiet 141, whichever command was writing.  SIGTERM stops
    a command as Ctrl-C does (engines save progress and say what they wrote), then exits 143.
    """
    import signal
    import warnings

    from kvctl.errors import EXIT_INTERRUPTED, EXIT_TERMINATED

    warnings.showwarning = show_warning
    stdout = guard_stdout()
    terminated: list[int] = []

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # SIGTERM stops a command as Ctrl-C does, so it saves its progress and says what it
        # wrote: hand it to whatever handles SIGINT now (asyncio.run installs its own).
        terminated.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:  # SIGINT ignored (a background job): still stop
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        code = _run(argv)
        try:
            sys.stdout.flush()  # what is still buffered fails here, not in the interpreter's exit flush
        except OutputError as exc:
            code = _output_failed(exc, code)
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.stdout = stdout
    if terminated and code == EXIT_INTERRUPTED:
        code = EXIT_TERMINATED
    if argv is None:
        # The process ends (a test passing its own argv goes on): spare the interpreter's final
        # collections, which walk every object of a large heap (an imported Dask client's) and
        # delayed the exit after a handled Ctrl-C.
        gc.freeze()
    sys.exit(code)


def _run(argv: list[str] | None) -> int:
    from typer._click.exceptions import NoArgsIsHelpError

    from kvctl.errors import EXIT_INTERRUPTED, KvctlError

    args = sys.argv[1:] if argv is None else argv
    STATE.quiet = STATE.json_result = False  # per command (tests run several in one process)
    STATE.json = "--json" in args[:args.index("--")] if "--" in args else "--json" in args
    command = typer.main.get_command(app)
    polish(command)
    try:
        result = command(args=args, prog_name="kvctl", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except NoArgsIsHelpError as exc:  # `kvctl` or `kvctl snapshot` alone: help, as gh and kubectl do
        sys.stdout.write(exc.ctx.get_help() + "\n")
        return 0
    except (KeyboardInterrupt, typer.Abort):
        return fail(EXIT_INTERRUPTED, "interrupted", "interrupted", prefix="kvctl: ")
    except typer.TyperException as exc:  # click's usage errors, in kvctl's words
        return fail(getattr(exc, "exit_code", 2), "usage", describe(exc))
    except OutputError as exc:
        return _output_failed(exc, 0)
    except KvctlError as exc:
        _traceback()
        return fail(exc.exit_code, error_kind(exc), scrub(str(exc)))
    except Exception as exc:
        _traceback()
        return fail(70, "internal", f"{type(exc).__name__}: {scrub(str(exc))} ({DEBUG_HINT})",
                    prefix="kvctl: internal error: ")


DEBUG_HINT = 'run it again as "kvctl --debug COMMAND ..." for a traceback'


def _traceback() -> None:
    if STATE.debug:
        import traceback

        traceback.print_exc()


def _output_failed(exc: OutputError, code: int) -> int:
    """Standard output failed: stop writing to it; a reader that went away is a quiet 141."""
    discard_stdout(sys.stdout)
    if code != 0:  # the command had already failed, and said so
        return code
    if exc.broken_pipe:
        return EXIT_BROKEN_PIPE
    sys.stderr.write(f"kvctl: error: {exc}\n")
    return exc.exit_code
