"""Schema-driven fuzz of the running service from the committed openapi.yaml (schemathesis):
no 5xx, every response conforms to the schema (status code documented, content type, body).

Bounded: at most MAX_EXAMPLES generated cases per operation, loopback only.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
import tiny_repo
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.slow  # `make stress`; excluded from `make test`

ROOT = Path(__file__).resolve().parents[3]
SPEC = ROOT / "openapi.yaml"
MAX_EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def service_url(tmp_path_factory):
    from bench.server import ServiceProcess

    repo = tiny_repo.write_repo(tmp_path_factory.mktemp("fuzz_repo"))
    env = {"SINDER_LOG_LEVEL": "warning", "SINDER_MAX_IMAGES": "4", "SINDER_MAX_BODY_BYTES": "1000000",
           "SINDER_REQUEST_TIMEOUT_S": "10"}
    log = tmp_path_factory.mktemp("fuzz_log") / "service.log"
    with ServiceProcess(repo, env=env, log_path=log) as svc:
        yield svc.url
        if svc.proc.poll() is not None:
            pytest.fail(f"the service died during the fuzz:\n{svc.log_tail()}")


if SPEC.exists():
    schema = schemathesis.openapi.from_path(str(SPEC))

    @schema.parametrize()
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def test_openapi_fuzz(case, service_url):
        case.call_and_validate(base_url=service_url, checks=CHECKS, timeout=30)

else:

    def test_openapi_fuzz():
        pytest.fail(f"{SPEC} is missing: the API contract must be committed (the service tests generate it)")
