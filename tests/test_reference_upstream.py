"""The reference upstream implements the contract (docs/upstream-contract.md)."""

from __future__ import annotations

import httpx
import pytest

from conftest import Upstream


def get(upstream: Upstream, headers: dict[str, str], **params: str) -> httpx.Response:
    return httpx.get(upstream.url + "/v1/snapshots", headers=headers, params=params)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"X-API-Key": "nope"},
        {"X-API-Key": "demo-alice-key", "Authorization": "Bearer demo-bob-token"},
    ],
)
def test_unauthenticated_requests_get_401(upstream: Upstream, headers: dict[str, str]) -> None:
    response = get(upstream, headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_bad_type_gets_the_contracts_422_shape(upstream: Upstream) -> None:
    response = get(upstream, {"X-API-Key": "demo-alice-key"}, type="everything")
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["query", "type"] and detail["type"] == "string_pattern_mismatch"


def test_system_lists_only_public_system_snapshots(upstream: Upstream) -> None:
    body = get(upstream, {"Authorization": "Bearer demo-bob-token"}, type="system").json()
    assert {item["id"] for item in body} == {"sys-ubuntu-24.04", "sys-python-3.12"}


def test_openapi_documents_the_contract(upstream: Upstream) -> None:
    spec = httpx.get(upstream.url + "/openapi.json").json()
    operation = spec["paths"]["/v1/snapshots"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert params["type"]["schema"]["anyOf"][0]["pattern"] == "^(user|system)$"
    assert params["x-api-key"]["in"] == "header"
    assert operation["security"] == [{"OAuth2PasswordBearer": []}]
    item = spec["components"]["schemas"]["SnapshotInfo"]
    assert sorted(item["required"]) == ["created_at", "id", "snapshot_type", "status", "updated_at"]
    assert set(operation["responses"]) == {"200", "422"}
