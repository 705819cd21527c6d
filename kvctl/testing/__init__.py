"""The conformance suite every kvctl backend passes; outside plugin authors run it too.

Usage, in a plugin's tests::

    from kvctl.testing import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store_url(self, tmp_path):
            return f"mystore:///{tmp_path}/db"

The suite opens the URL through the plugin registry (so registration is tested too), clears the
store before each test, and skips a test only when the backend *declares* it lacks the capability
the test needs.  Async stores are driven through :func:`kvctl.adapt.to_sync`.

Backends with a versioned change feed also run :mod:`kvctl.testing.replication`
(``ReplicationConformance``, ``SyncConformance``); :mod:`kvctl.testing.cli` runs ``python -m kvctl``
in a process of its own for tests of the command line.
"""

from kvctl.testing.conformance import ADVERSARIAL_KEYS, StoreConformance, open_sync

__all__ = ["ADVERSARIAL_KEYS", "StoreConformance", "open_sync"]
