"""pump_ready: an item is made ready while the step before it runs, and the steps still run one
at a time, in order; whatever stops the loop (a failed step, a failed source, a cancellation),
the step under way ends first and no later step starts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from kvctl.engines._pipeline import Ready, pump_ready


class Log:
    def __init__(self, fail_step: int | None = None) -> None:
        self.events: list[str] = []
        self.fail_step = fail_step
        self.in_flight = 0

    def ready(self, item: int) -> Ready:
        self.events.append(f"ready {item}")

        async def step() -> None:
            assert self.in_flight == 0  # one step at a time
            self.in_flight += 1
            self.events.append(f"start {item}")
            try:
                await asyncio.sleep(0.02)
                if item == self.fail_step:
                    raise RuntimeError(f"step {item} failed")
            finally:
                self.in_flight -= 1
            self.events.append(f"end {item}")

        return step


async def items(n: int, fail_at: int | None = None) -> AsyncIterator[int]:
    for i in range(n):
        if i == fail_at:
            raise ValueError("the source failed")
        yield i


def test_the_next_item_is_made_ready_while_a_step_runs_and_steps_run_in_order() -> None:
    log = Log()
    asyncio.run(pump_ready(items(4), log.ready))
    ends = [e for e in log.events if e.startswith(("start", "end"))]
    assert ends == ["start 0", "end 0", "start 1", "end 1", "start 2", "end 2", "start 3", "end 3"]
    for i in range(3):  # ready i+1 while step i is under way
        assert log.events.index(f"start {i}") < log.events.index(f"ready {i + 1}") < log.events.index(f"end {i}")


def test_a_failed_step_stops_every_later_step() -> None:
    log = Log(fail_step=1)
    with pytest.raises(RuntimeError, match="step 1 failed"):
        asyncio.run(pump_ready(items(5), log.ready))
    assert "start 2" not in log.events and log.events[-1] != "end 1"


def test_a_failed_source_lets_the_step_under_way_end_first() -> None:
    log = Log()
    with pytest.raises(ValueError, match="the source failed"):
        asyncio.run(pump_ready(items(5, fail_at=2), log.ready))
    assert log.events[-1] == "end 1" and log.in_flight == 0


def test_a_cancellation_lets_the_step_under_way_end_and_starts_no_other() -> None:
    log = Log()

    async def main() -> None:
        task = asyncio.ensure_future(pump_ready(items(100), log.ready))
        while "start 2" not in log.events:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert log.events[-1] == "end 2" and "start 3" not in log.events and log.in_flight == 0


def test_the_gil_changes_hands_quickly_while_steps_run_and_as_before_after() -> None:
    """A store's thread writing a batch gets the GIL back quickly while this thread makes the
    next batch ready; the interpreter's setting is put back at the end."""
    import sys

    before = sys.getswitchinterval()
    seen: list[float] = []

    def ready(item: int) -> Ready:
        async def step() -> None:
            seen.append(sys.getswitchinterval())

        return step

    asyncio.run(pump_ready(items(3), ready))
    assert seen and max(seen) <= 0.001 < before
    assert sys.getswitchinterval() == before


def test_what_stopped_the_loop_is_the_error_raised_when_the_step_under_way_fails_too() -> None:
    """The source fails while the last step is under way and that step fails as well: the
    source's error is reported (an engine may handle it, e.g. a malformed line), after the step
    has ended."""
    log = Log(fail_step=1)
    with pytest.raises(ValueError, match="the source failed"):
        asyncio.run(pump_ready(items(5, fail_at=2), log.ready))
    assert "start 1" in log.events and log.in_flight == 0 and "start 2" not in log.events
