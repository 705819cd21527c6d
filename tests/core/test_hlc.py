from __future__ import annotations

from kvctl.hlc import HLC, make_version, physical_ms


def test_monotonic_when_the_wall_clock_stalls_or_goes_back() -> None:
    wall = [1000]
    clock = HLC(node=3, wall_ms=lambda: wall[0])
    a = clock.now()
    b = clock.now()
    wall[0] = 900  # the clock steps back
    c = clock.now()
    assert a < b < c
    assert physical_ms(c) == 1000
    assert c & 0xFF == 3


def test_observe_orders_after_a_remote_version_from_a_fast_clock() -> None:
    remote = make_version(5_000_000, 7, 1)  # a peer whose clock is far ahead
    local = HLC(node=2, wall_ms=lambda: 1_000)
    local.observe(remote)
    assert local.now() > remote


def test_counter_overflow_moves_logical_time_forward() -> None:
    clock = HLC(wall_ms=lambda: 10)
    versions = [clock.now() for _ in range(10_000)]
    assert versions == sorted(set(versions))
    assert physical_ms(versions[-1]) == 11


def test_versions_fit_a_signed_64_bit_column() -> None:
    assert HLC().now() < 2**63


def test_newer_is_a_total_order_for_replication() -> None:
    from kvctl.store import TOMBSTONE, Record, newer

    a = Record(b"k", b"a", None, 10)
    b = Record(b"k", b"b", None, 10)  # same version, different content: a clock collision
    assert newer(b, a) != newer(a, b)
    assert not newer(a, a)  # the same write twice is a no-op
    assert newer(Record(b"k", b"", None, 11, TOMBSTONE), a)
    assert not newer(Record(b"k", b"z", None, 9), a)
    assert newer(a, Record(b"k", b"old"))  # versioned beats unversioned
    assert not newer(Record(b"k", b"new"), a)
