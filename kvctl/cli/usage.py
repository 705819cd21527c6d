"""Command-line conventions typer does not give by itself.

- :func:`describe`: a usage error (an unknown option, a missing argument, a value out of
  range, in click's or pydantic's wording) as one line in kvctl's words, naming the help to read;
- :func:`polish`: the help shows flags as flags and values by name (``--limit LIMIT``,
  ``get [OPTIONS] KEY``), as git, gh and rclone do, instead of ``<int range>`` and ``{key}``.
"""

from __future__ import annotations

import re
from typing import Any

# pydantic's and click's phrases, in the words kvctl uses elsewhere ("must be ...").
_REWORDINGS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Input should be greater than or equal to (\S+)"), r"must be at least \1"),
    (re.compile(r"Input should be less than or equal to (\S+)"), r"must be at most \1"),
    (re.compile(r"Input should be greater than (\S+)"), r"must be more than \1"),
    (re.compile(r"Input should be less than (\S+)"), r"must be less than \1"),
    (re.compile(r"Input should be a valid integer.*"), "must be a whole number"),
    (re.compile(r"Input should be a valid number.*"), "must be a number"),
    (re.compile(r"Value error, (.*?)\.?$"), r"\1"),
    (re.compile(r"Input should be (.*)"), r"must be \1"),
)


def reword(reason: str) -> str:
    reason = reason.strip().rstrip(".")
    for pattern, replacement in _REWORDINGS:
        if pattern.search(reason):
            return pattern.sub(replacement, reason, count=1).rstrip(".")
    return reason


def _param_name(param: Any) -> str:
    """An option by its long name (``--limit``), an argument by its metavar (``KEY``)."""
    opts = getattr(param, "opts", None) or []
    if getattr(param, "param_type_name", "") == "option" and opts:
        return max(opts, key=len)
    return _argument_name(param)


def _argument_name(param: Any) -> str:
    """An argument's name without the usage line's decoration (``[KEY]...`` is KEY)."""
    return re.sub(r"[\[\].]", "", str(param.metavar or param.name or "argument")).upper()


def describe(exc: Any) -> str:
    """One line for a click/typer usage error: what is wrong, then which help to read."""
    from typer._click import exceptions as click_exc

    message = str(getattr(exc, "message", "") or exc)
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click_exc.NoSuchOption) and ctx is not None and _is_global(ctx, exc.option_name):
        sub = ctx.command_path.partition(" ")[2]
        option = exc.option_name
        text = f"{option} is a global option: give it before the command (kvctl {option} ... {sub} ...)"
    elif isinstance(exc, click_exc.NoSuchOption):
        text = f"unknown option {exc.option_name}"
        if exc.possibilities:
            text += f" (did you mean {' or '.join(sorted(exc.possibilities))}?)"
    elif isinstance(exc, click_exc.MissingParameter):
        text = f"missing {_param_name(exc.param)}" if exc.param is not None else "missing argument"
    elif isinstance(exc, click_exc.BadParameter):
        where = _param_name(exc.param) if exc.param is not None else "a value"
        text = f"{where}: {reword(message)}"
    elif isinstance(exc, click_exc.BadOptionUsage) and "requires an argument" in message:
        text = f"{exc.option_name} needs a value"
    elif match := re.match(r"No such command '([^']*)'\.?(?: Did you mean '([^']*)'\?)?", message):
        text = f"unknown command {match.group(1)!r}"
        text += f" (did you mean {match.group(2)!r}?)" if match.group(2) else ""
    elif match := re.match(r"Got unexpected extra argument(?:\(s\)|s)? \((.*)\)", message):
        text = f"unexpected argument(s): {match.group(1)}"
    else:
        text = reword(message)
    command = ctx.command_path if ctx is not None else "kvctl"
    return f"{text} (see '{command} --help')"


def _is_global(ctx: Any, option: str) -> bool:
    """True when ``option`` belongs to kvctl itself (``-u``, ``--keys``) and was given after a
    command, where click does not look for it."""
    root = ctx.find_root()
    return root is not ctx and any(option in getattr(p, "opts", []) for p in root.command.params)


def polish(command: Any) -> None:
    """Name every value in the help of ``command`` and its subcommands (see the module doc)."""
    for param in command.params:
        if getattr(param, "param_type_name", "") == "argument":
            _name_argument(param)
        elif not getattr(param, "is_flag", False) and param.metavar is None:
            shown = param.display_type(None) if hasattr(param, "display_type") else ""
            # a choice keeps its list (text|hex|base64); anything else is named after its option
            param.metavar = shown if "|" in shown else max(param.opts, key=len).lstrip("-").upper()
    for sub in getattr(command, "commands", {}).values():
        polish(sub)


def _name_argument(param: Any) -> None:
    explicit = param.metavar is not None
    name = _argument_name(param)
    if not explicit:
        name = name if param.required else f"[{name}]"
        name += "..." if param.nargs != 1 else ""
    param.metavar = name
    # typer wraps a required argument in braces in the usage line, and adds its Python type
    param._usage_display_name = lambda: name
    param.display_type_rich = lambda ctx: None


def examples(*lines: str) -> str:
    """A command's "Examples:" epilog, printed as written (no rewrapping), as gh and rclone show
    them.  Each line is a command line, optionally followed by ``  # what it does``."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)
