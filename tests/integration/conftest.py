"""Every test in this folder talks to the real server."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.server)


@pytest.fixture(params=["http", "grpc"])
def caller(request):
    from tests.integration.triton_calls import Caller

    client = request.getfixturevalue(f"{request.param}_client")
    return Caller(request.param, client)
