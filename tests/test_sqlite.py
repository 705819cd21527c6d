import pytest

from kvctl.testing import StoreConformance


class TestSQLiteConformance(StoreConformance):
    @pytest.fixture
    def store_url(self, tmp_path) -> str:
        return f"sqlite://{tmp_path}/kv.db"
