"""The Redis backends on the real servers started by tests/services.sh: the conformance suite on a
standalone server (TCP and unix socket) and on a 3-master Redis Cluster, each also with the
local cache switched on.

Every run works under its own key namespace (pid + random suffix), so concurrent runs against
one server never collide; the suite's clear() removes only that namespace.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from kvctl.testing import StoreConformance
from tests.backends.redis.support import clear_namespace, with_options
from tests.conftest import service_url

pytestmark = pytest.mark.server

RUN = f"kvctl-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module", autouse=True)
def remove_leftovers() -> Iterator[None]:
    """The suite clears a store before each test, not after: remove this run's keys at the end."""
    yield
    clear_namespace(RUN, "KVCTL_TEST_REDIS_URL", "KVCTL_TEST_REDIS_CLUSTER_URL")


class TestRedisConformance(StoreConformance):
    @pytest.fixture
    def store_url(self) -> str:
        return with_options(service_url("KVCTL_TEST_REDIS_URL"), namespace=f"{RUN}:plain:")


class TestRedisCachedConformance(StoreConformance):
    @pytest.fixture
    def store_url(self) -> str:
        return with_options(service_url("KVCTL_TEST_REDIS_URL"), namespace=f"{RUN}:cached:",
                            local_cache=1000, cache_channel=f"{RUN}:invalidate")


class TestRedisUnixConformance(StoreConformance):
    # the same server and commands as TestRedisConformance, over a unix socket: the model check
    # there covers the semantics, a few examples here the transport
    state_machine_examples = 8

    @pytest.fixture
    def store_url(self) -> str:
        return with_options(service_url("KVCTL_TEST_REDIS_UNIX_URL"), namespace=f"{RUN}:unix:")


class TestRedisClusterConformance(StoreConformance):
    @pytest.fixture
    def store_url(self) -> str:
        return with_options(service_url("KVCTL_TEST_REDIS_CLUSTER_URL"), namespace=f"{RUN}:cluster:")


class TestRedisClusterCachedConformance(StoreConformance):
    @pytest.fixture
    def store_url(self) -> str:
        return with_options(service_url("KVCTL_TEST_REDIS_CLUSTER_URL"), namespace=f"{RUN}:ccached:",
                            local_cache=1000, cache_channel=f"{RUN}:cinvalidate")
