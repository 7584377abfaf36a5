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


@pytest.fixture(scope="session")
def crash_only_server(tmp_path_factory):
    """`modelrepo serve` on the text pipelines (linked, not rebuilt), for tests that crash tritonserver:
    every test using it leaves it serving again."""
    from modelrepo.perf.serve_process import READY_BANNER, ServeProcess, linked_repository

    serve = ServeProcess(linked_repository(tmp_path_factory.mktemp("crash") / "repository"), "--max-restarts", "20")
    try:
        serve.wait_for(READY_BANNER)
        yield serve
    finally:
        serve.stop()
