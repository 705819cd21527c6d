"""A hypothesis state machine that checks a store against a dict model."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from kvctl.store import Record, Store

# A small alphabet makes prefixes collide and keys repeat, which is where bugs live.
KEYS = st.binary(min_size=1, max_size=6).map(lambda b: bytes(c % 5 * 37 % 256 for c in b)) | st.sampled_from(
    [b"a", b"a%", b"a_", b"ab", b"\x00", b"\xff", b"a\xff"]
)
VALUES = st.binary(max_size=64)


def run_state_machine(store: Store, max_examples: int = 25) -> None:
    caps = store.capabilities

    class StoreMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.model: dict[bytes, bytes] = {}

        @initialize()
        def start_empty(self) -> None:
            store.clear()

        @rule(key=KEYS, value=VALUES)
        def set(self, key: bytes, value: bytes) -> None:
            store.set(key, value)
            self.model[key] = value

        @rule(items=st.dictionaries(KEYS, VALUES, max_size=8))
        def set_many(self, items: dict[bytes, bytes]) -> None:
            store.set_many(Record(k, v) for k, v in items.items())
            self.model.update(items)

        @rule(key=KEYS)
        def delete(self, key: bytes) -> None:
            assert store.delete(key) == (key in self.model)
            self.model.pop(key, None)

        @rule(keys=st.lists(KEYS, max_size=6, unique=True))
        def delete_many(self, keys: list[bytes]) -> None:
            assert store.delete_many(keys) == sum(k in self.model for k in keys)
            for k in keys:
                self.model.pop(k, None)

        @rule(key=KEYS)
        def get(self, key: bytes) -> None:
            rec = store.get(key)
            assert (rec.value if rec else None) == self.model.get(key)

        @rule(prefix=st.binary(max_size=2).map(lambda b: bytes(c % 5 * 37 % 256 for c in b)),
              batch=st.integers(1, 5))
        def scan(self, prefix: bytes, batch: int) -> None:
            got = {r.key: r.value for p in store.scan(prefix, batch_size=batch) for r in p.records}
            assert got == {k: v for k, v in self.model.items() if k.startswith(prefix)}
            keys = [r.key for p in store.scan(prefix, batch_size=batch, keys_only=True) for r in p.records]
            if caps.ordered_scan:
                assert keys == sorted(keys)
            assert store.count(prefix) == len(got)

        @invariant()
        def counts_agree(self) -> None:
            assert store.count() == len(self.model)

    run_state_machine_as_test(
        StoreMachine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        ),
    )
