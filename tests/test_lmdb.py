import pytest

from kvctl.testing import StoreConformance


class TestLMDBConformance(StoreConformance):
    @pytest.fixture
    def store_url(self, tmp_path) -> str:
        return f"lmdb://{tmp_path}/env"
