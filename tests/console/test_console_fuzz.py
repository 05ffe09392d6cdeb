"""The JSON API fuzzed against its own OpenAPI document with schemathesis: whatever the
generated requests (valid and not), the console answers without a server error."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import console_app
import pytest
import schemathesis
import schemathesis.checks as checks
from console_support import LiveServer
from hypothesis import HealthCheck, settings

from dotdo.console.api import openapi_document
from dotdo.engine import people

schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    live = LiveServer(tmp_path_factory.mktemp("fuzz") / "fuzz.db").start()

    async def seed(engine: Any) -> str:
        for i in range(3):
            await engine.start(console_app.Purchases.order, 10.0 * i, run_id=f"fz{i}")
            await engine.idle(f"fz{i}", timeout=10)
        return await people.new_token(engine.store, "olga", now=time.time())

    token = live.call(seed)
    yield {"url": live.url, "headers": {"Authorization": f"Bearer {token}"}}
    live.stop()


def test_the_openapi_document_is_served_and_names_every_operation() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    operations = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert ("post", "/api/approvals/{approval_id}/decide") in operations
    assert ("get", "/api/runs") in operations and ("post", "/api/events") in operations


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_api_never_answers_with_a_server_error(
    case: schemathesis.Case, fuzz_server: dict[str, Any]
) -> None:
    response = case.call(base_url=fuzz_server["url"], headers=fuzz_server["headers"], timeout=10)
    assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
    # Answers match the document (status codes, content types, bodies of 200s).
    case.validate_response(
        response,
        checks=[
            checks.not_a_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_schema_conformance,
        ],
    )


def test_fuzz_server_paths_are_exercised(fuzz_server: dict[str, Any], tmp_path: Path) -> None:
    import httpx

    answer = httpx.get(f"{fuzz_server['url']}/api/runs", headers=fuzz_server["headers"])
    assert answer.status_code == 200 and len(answer.json()["runs"]) >= 3
