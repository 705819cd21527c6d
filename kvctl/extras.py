"""Optional dependencies installed by an extra (``pip install 'kvctl[NAME]'``), imported when a
command first needs one, with one clear line when it is missing."""

from __future__ import annotations

import importlib
from typing import Any

from kvctl.errors import UsageError


def import_extra(module: str, extra: str, what: str) -> Any:
    """``module``, or a :class:`UsageError` saying that ``what`` needs the extra ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"{what} needs the Python module {module}", hint=f"pip install 'kvctl[{extra}]'") from None
