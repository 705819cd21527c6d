import pytest

from kvctl.testing import StoreConformance


class TestMemoryConformance(StoreConformance):
    @pytest.fixture
    def store_url(self) -> str:
        return "memory://"
