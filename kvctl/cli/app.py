"""The kvctl command line: global options, command registration, and error handling."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from kvctl import __version__
from kvctl.cli import admin, config_cmd, data, engines
from kvctl.cli.context import STATE, scrub
from kvctl.codec import KeyEncoding, ValueEncoding

HELP = (
    "kvctl: administer, migrate, snapshot, sync and benchmark key-value stores.\n\n"
    "The store is chosen by --url/-u (a URL or a profile name), else $KVCTL_URL, else the default "
    "profile, else an embedded SQLite store in your data directory (no server needed).\n\n"
    "Exit codes: 0 ok; 1 key not found or stores differ; 2 usage or bad URL; 3 plugin failed to load; "
    "4 unsupported by the backend; 5 over a size limit; 6 conflict; 7 locked; 8 incomplete copy; "
    "9 change feed gap; "
    "65 corrupt data; 69 server unavailable; 70 internal error; 74 I/O error; 77 auth failed; "
    "130 interrupted."
)

app = typer.Typer(
    name="kvctl",
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"kvctl {__version__}")
        raise typer.Exit()


def _complete_url(incomplete: str) -> list[str]:
    names = config_cmd.complete_profile(incomplete)
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
    debug: Annotated[bool, typer.Option("--debug", help="Show a traceback on errors.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    STATE.url, STATE.key_encoding, STATE.value_encoding, STATE.debug = url, keys, values, debug


for _module in (data, admin, config_cmd, engines):
    _module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: every failure becomes one line on stderr and a documented exit code."""
    from kvctl.errors import EXIT_INTERRUPTED, KvctlError

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        result = app(args=argv, prog_name="kvctl", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except typer.Exit as exc:
        code = exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        sys.stderr.write("kvctl: interrupted\n")
        code = EXIT_INTERRUPTED
    except typer.TyperException as exc:  # usage errors: typer prints usage and the problem
        exc.show()  # type: ignore[attr-defined]
        code = getattr(exc, "exit_code", 2)
    except KvctlError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"kvctl: error: {scrub(str(exc))}\n")
        code = exc.exit_code
    except BrokenPipeError:
        import os

        # the reader went away (`kvctl scan | head`): stop quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    except Exception as exc:
        if debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"kvctl: internal error: {type(exc).__name__}: {scrub(str(exc))} "
                         "(run with --debug for a traceback)\n")
        code = 70
    sys.exit(code)
