import pytest, sys
sys.path.insert(0, "/work/main/tests/integration")
from helpers import fast_passwords  # noqa
@pytest.mark.parametrize("i", range(15))
async def test_x(client, i):
    r = await client.get("/api/v1/tasks")
    assert r.status_code == 200
