"""Option and argument values converted without pydantic when they are plainly valid.

typer converts every value through a pydantic ``TypeAdapter``, and importing pydantic and
building the adapters costs a bulk command about a tenth of a second before its first row.
:func:`quicken` gives each parameter a converter that takes only the unambiguous case -- a text
value for ``str``, decimal digits in range for ``int``, a listed choice, a path -- and returns
what typer's own would.  Any other value (a bad one, above all) goes to typer's converter, so
its errors, and kvctl's wording of them (:mod:`.usage`), are exactly as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

import typer

# typer's private modules (typer is pinned to one minor version): a typer whose internals differ
# fails this import, and kvctl/cli/app.py then leaves typer's own converters in place
from typer._coercion import RuntimeParam, build_runtime_param
from typer._param_types import coerce_cli_path
from typer._typing import is_literal_type, literal_values

_NO: Any = object()  # not plainly valid: typer's converter decides
_WHOLE = re.compile(r"-?[0-9]{1,18}")  # well inside 64 bits, no sign or space to read
Quick = Callable[[Any, Any, Any, Any], Any]  # (value, parameter_info, param, ctx) -> value or _NO


def _flag(value: Any, info: Any, param: Any, ctx: Any) -> Any:
    return value if type(value) is bool else _NO


def _text(value: Any, info: Any, param: Any, ctx: Any) -> Any:
    return value if type(value) is str else _NO


def _whole(value: Any, info: Any, param: Any, ctx: Any) -> Any:
    if type(value) is int:
        number = value
    elif type(value) is str and _WHOLE.fullmatch(value):
        number = int(value)
    else:
        return _NO
    if (info.min is not None and number < info.min) or (info.max is not None and number > info.max):
        return _NO  # typer words the range
    return number


def _path(value: Any, info: Any, param: Any, ctx: Any) -> Any:
    if type(value) is not str or not value or "\0" in value:
        return _NO
    # a Path in hand: typer's own path checks (exists, dash, resolve) run without pydantic; a
    # refused path goes to typer's converter, whose message shows it as typed (Path drops "./", "/")
    try:
        return coerce_cli_path(Path(value), info, path_type=Path, param=param, ctx=ctx)
    except typer.BadParameter:
        return _NO


def _choice(choices: tuple[str, ...]) -> Quick:
    def choose(value: Any, info: Any, param: Any, ctx: Any) -> Any:
        if type(value) is str and value in choices and getattr(ctx, "token_normalize_func", None) is None:
            return value
        return _NO
    return choose


def _each(quick: Quick) -> Quick:
    def each(value: Any, info: Any, param: Any, ctx: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            return _NO
        items = [quick(item, info, param, ctx) for item in value]
        return _NO if any(item is _NO for item in items) else items
    return each


def _quick_for(annotation: Any, info: Any) -> Quick | None:
    """The quick converter of a parameter typer would give this annotation; None: typer's only."""
    if info.parser is not None or getattr(info, "click_type", None) is not None:
        return None
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        inner = _quick_for(item, info)
        return None if inner is None else _each(inner)
    if annotation is str:
        return _text
    if annotation is bool:
        return _flag
    if annotation is int and not info.clamp:
        return _whole
    if annotation is Path and info.path_type is None:
        return _path
    if is_literal_type(annotation) and info.case_sensitive:
        choices = literal_values(annotation)
        if all(type(c) is str for c in choices):
            return _choice(choices)
    return None


@dataclass(frozen=True)
class _QuickParam(RuntimeParam):
    quick: Quick
    descriptor: Any

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        got = self.quick(value, self.parameter_info, param, ctx)
        if got is not _NO:
            return got
        return build_runtime_param(self.descriptor)._coerce_value(value, param=param, ctx=ctx)


def _get_runtime_param(self: Any) -> RuntimeParam:
    if self._runtime_param is None:
        descriptor = self.type_descriptor
        quick = None if descriptor.file_annotation else _quick_for(descriptor.annotation, descriptor.parameter_info)
        self._runtime_param = (build_runtime_param(descriptor) if quick is None else
                               _QuickParam(descriptor.parameter_info, descriptor.annotation, quick, descriptor))
    return self._runtime_param


def quicken() -> None:
    """Give every typer parameter, as it first converts a value, a quick converter where one fits
    (help and completion options included, which typer adds as it parses)."""
    from typer.core import _TyperParameter

    if callable(getattr(_TyperParameter, "get_runtime_param", None)):
        _TyperParameter.get_runtime_param = _get_runtime_param  # type: ignore[method-assign]
