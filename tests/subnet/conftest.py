import pytest

from tests.conftest import one_torch_thread

_one_thread = pytest.fixture(autouse=True)(one_torch_thread)
