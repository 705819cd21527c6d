"""The quick converters of kvctl.cli.coercion give what typer's own (pydantic) converters give."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
from typer._click.exceptions import BadParameter
from typer._coercion import build_runtime_param, resolve_type_descriptor
from typer.models import OptionInfo

from kvctl.cli.coercion import _quick_for, _QuickParam

VALUES: list[Any] = ["5000", "007", "-3", "0", "-0", "", " 5", "5 ", "+5", "1_000", "1e3", "5.0", "x", "é",
                     "9" * 18, "9" * 19, "9" * 30, 12, True, None, "overwrite", "OVERWRITE", "skip", "-", "a\0b",
                     "some/file.kvs", "/abs/path", "./missing/", "/", ".", ["a", "b"], ("1", "2"), ["1", "x"]]
CASES = [
    (str, OptionInfo()),
    (int, OptionInfo()),
    (int, OptionInfo(min=1)),
    (int, OptionInfo(min=0, max=100)),
    (bool, OptionInfo()),
    (Path, OptionInfo()),
    (Path, OptionInfo(exists=True)),  # refusals word the path as typed: "./missing/", "/abs/path"
    (Path, OptionInfo(dir_okay=False)),
    (Literal["overwrite", "skip", "newer", "fail"], OptionInfo()),
    (list[str], OptionInfo()),
    (list[int], OptionInfo()),
]


class _Param:  # what a converter reads of its parameter: a flag that takes one value
    multiple, nargs, name, opts, param_type_name, human_readable_name = False, 1, "x", ["--x"], "option", "--x"


def _outcome(runtime: Any, value: Any) -> tuple[str, Any]:
    try:
        return "ok", runtime._coerce_value(value, param=_Param(), ctx=None)
    except (BadParameter, ValueError) as exc:
        return "error", str(exc)
    except Exception as exc:  # pydantic's ValidationError: compared by its text
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize(("annotation", "info"), CASES, ids=[repr(c[0]) + repr(c[1].min) for c in CASES])
def test_quick_converter_agrees_with_typers(annotation: Any, info: OptionInfo) -> None:
    descriptor = resolve_type_descriptor(annotation, info)
    quick = _quick_for(annotation, info)
    assert quick is not None
    mine = _QuickParam(info, annotation, quick, descriptor)
    theirs = build_runtime_param(descriptor)
    for value in VALUES:
        got, want = _outcome(mine, value), _outcome(theirs, value)
        assert got == want, (annotation, value)
        assert type(got[1]) is type(want[1]), (annotation, value)


def test_unusual_parameters_keep_typers_converter() -> None:
    assert _quick_for(int, OptionInfo(clamp=True, min=1)) is None
    assert _quick_for(int, OptionInfo(parser=int)) is None
    assert _quick_for(float, OptionInfo()) is None
    assert _quick_for(Literal["a", "b"], OptionInfo(case_sensitive=False)) is None


def test_a_bulk_command_does_not_import_pydantic(tmp_path: Path) -> None:
    dump = tmp_path / "in.jsonl"
    dump.write_text('{"key":"a","value":"1","expires_at_ms":null}\n')
    code = ("import sys; sys.argv = ['kvctl', '-u', sys.argv[1], 'import', '--batch-size', '10', "
            "'--on-conflict', 'skip', sys.argv[2]]\n"
            "from kvctl.cli.app import main\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            "assert 'pydantic' not in sys.modules, 'pydantic was imported'\n")
    done = subprocess.run([sys.executable, "-c", code, f"sqlite:///{tmp_path / 'kv.db'}", str(dump)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "imported 1 records" in done.stdout

