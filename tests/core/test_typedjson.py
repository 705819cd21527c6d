"""The JSON document of a typed value: each kind's shape, its order, and the lossless base64 rule."""

from __future__ import annotations

import json

import pytest

from kvctl.plugin_kit.typedjson import document


def test_shapes_and_orders() -> None:
    assert json.loads(document("hash", [(b"b", b"2"), (b"a", b"1")])) == {"type": "hash", "value": {"a": "1", "b": "2"}}
    assert list(json.loads(document("hash", [(b"b", b"2"), (b"a", b"1")]))["value"]) == ["a", "b"]
    assert json.loads(document("list", [b"z", b"a", b"z"]))["value"] == ["z", "a", "z"]  # list order, repeats
    assert json.loads(document("set", [b"z", b"a"]))["value"] == ["a", "z"]  # byte order
    assert json.loads(document("zset", [(b"lo", float("-inf")), (b"m", 0.1), (b"hi", float("inf"))]))["value"] == [
        ["lo", "-inf"], ["m", 0.1], ["hi", "inf"]]
    assert json.loads(document("stream", [("1-0", [(b"f", b"v"), (b"f", b"w")])]))["value"] == [
        {"id": "1-0", "fields": [["f", "v"], ["f", "w"]]}]


def test_one_byte_string_that_is_not_utf8_makes_every_string_base64() -> None:
    doc = json.loads(document("zset", [(b"ok", 1.0), (b"\xff", 2.0)]))
    assert doc == {"type": "zset", "value_b64": [["b2s=", 1.0], ["/w==", 2.0]]}
    assert document("list", ["caf\u00e9".encode()]) == '{"type":"list","value":["caf\u00e9"]}'.encode()


def test_a_kind_without_a_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="no JSON shape"):
        document("vectorset", [])
