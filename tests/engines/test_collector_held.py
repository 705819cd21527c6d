"""Parsing a run or decoding a block holds the cyclic collector off, and gives it back as it was."""

from __future__ import annotations

import gc
import io

import pytest

from kvctl.engines._gc import collector_held
from kvctl.engines.dump import numbered_records


def test_the_collector_is_held_off_inside_and_back_on_after_even_on_an_error() -> None:
    assert gc.isenabled()
    with collector_held():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(KeyError), collector_held():
        raise KeyError("x")
    assert gc.isenabled()


def test_a_collector_already_off_is_left_off() -> None:
    gc.disable()
    try:
        with collector_held():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_import_leaves_the_collector_on() -> None:
    lines = b"".join(b'{"key":"k%d","value":"v"}\n' % i for i in range(3000))
    assert len(list(numbered_records(io.BytesIO(lines), "jsonl", "in.jsonl"))) == 3000
    assert gc.isenabled()
