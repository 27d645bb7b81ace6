"""Fixtures for the service tests: a tiny contract-conforming model repository and app clients."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tiny_repo, for test modules in sub-folders

import tiny_repo as _tiny  # noqa: E402
from service_test_utils import wait_loaded  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _no_sinder_env():
    """Tests build their own settings: SINDER_* variables of the caller's shell must not leak in."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("SINDER_")}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """models tiny (original), tiny_sinder (repaired pair, default), tiny_reg (2 registers); plus tiny/reports/."""
    return _tiny.write_repo(tmp_path_factory.mktemp("model_repo"))


@pytest.fixture
def make_client(tiny_repo):
    """``make_client(repo=None, backend_factory=None, **settings) -> TestClient`` with models loaded."""
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.config import Settings

    opened = []

    def make(repo: Path | None = None, backend_factory=None, wait: bool = True, raise_server_exceptions: bool = True, **overrides):
        settings = Settings(model_repo=repo or tiny_repo, **overrides)
        app = create_app(settings, backend_factory)
        client = TestClient(app, raise_server_exceptions=raise_server_exceptions)
        client.__enter__()
        opened.append(client)
        if wait:
            wait_loaded(app)
        return client

    yield make
    for client in reversed(opened):
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def client(tiny_repo):
    """One app over the tiny repository, shared by a module's tests."""
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.config import Settings

    app = create_app(Settings(model_repo=tiny_repo, max_body_bytes=2_000_000, max_images=8))
    with TestClient(app) as c:
        wait_loaded(app)
        yield c
