"""An upstream answer that breaks the contract costs at most the items it breaks, never the
gateway: no INTERNAL_SERVER_ERROR, no plain-text 500, nothing huge passed on to the caller."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from conftest import ALICE_KEY, FaultyUpstream, Gateway


@pytest.fixture
def start_gateway(start_in_process_gateway: Callable[..., Gateway]) -> Callable[..., Gateway]:
    """In process: what these tests check is the gateway's answer, not its socket."""
    return start_in_process_gateway


GOOD = {
    "id": "good",
    "status": "ready",
    "snapshot_type": "full",
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
}
HUGE = '"HUGE"'  # stands for JSON text json.dumps cannot write (or should not have to)


def snapshots_of(faulty: FaultyUpstream, start_gateway, body: str, fields: str = "id") -> dict:
    faulty.respond(200, body)
    return start_gateway(faulty.url).query(f"{{ snapshots {{ {fields} }} }}", ALICE_KEY)


def broken_body(**breach: Any) -> str:
    """A list of a broken item (GOOD with `breach` applied) and GOOD itself."""
    return json.dumps([dict(GOOD, id="breach", **breach), GOOD])


def assert_only_the_breach_is_broken(result: dict, fields: list[str] | None) -> None:
    assert result["data"] == {"snapshots": [{"id": "good"}]}
    (error,) = result["errors"]
    assert error["extensions"]["code"] == "UPSTREAM_BAD_RESPONSE"
    if fields is not None:
        assert error["extensions"]["snapshotId"] == "breach"
        assert error["extensions"]["fields"] == fields


def error_of(faulty: FaultyUpstream, start_gateway, status: int, body: str, **headers: str):
    faulty.respond(status, body, **headers)
    result = start_gateway(faulty.url).query("{ snapshots { id } }", ALICE_KEY)
    assert result["data"] is None
    (error,) = result["errors"]
    return error


@pytest.mark.parametrize("field", ["vcpu_count", "memory_mb"])
@pytest.mark.parametrize("value", [2**40, 2**31, -(2**31) - 1])
def test_a_count_beyond_graphql_int_is_a_broken_item(
    faulty: FaultyUpstream, start_gateway, field: str, value: int
) -> None:
    result = snapshots_of(faulty, start_gateway, broken_body(**{field: value}))
    assert_only_the_breach_is_broken(result, [field])


def test_the_largest_32_bit_counts_are_served_exactly(
    faulty: FaultyUpstream, start_gateway
) -> None:
    item = dict(GOOD, vcpu_count=2**31 - 1, memory_mb=-(2**31))
    result = snapshots_of(faulty, start_gateway, json.dumps([item]), "vcpuCount memoryMb")
    assert result == {"data": {"snapshots": [{"vcpuCount": 2**31 - 1, "memoryMb": -(2**31)}]}}


@pytest.mark.parametrize("digits", [401, 5_000, 1_000_000])
@pytest.mark.parametrize("sign", ["", "-"])
def test_an_integer_too_long_for_orjson_breaks_only_its_item(
    faulty: FaultyUpstream, start_gateway, digits: int, sign: str
) -> None:
    body = broken_body(size_bytes="HUGE").replace(HUGE, sign + "9" * digits)
    result = snapshots_of(faulty, start_gateway, body)
    assert_only_the_breach_is_broken(result, ["size_bytes"])


@pytest.mark.parametrize("number", ["9" * 401, "1e400", "-1e400", "18446744073709551616"])
def test_a_huge_number_in_an_ignored_field_breaks_nothing(
    faulty: FaultyUpstream, start_gateway, number: str
) -> None:
    # One 401-digit number sends the whole body through the stdlib parser: the other
    # numbers must come out of it as orjson would have made them.
    item = dict(GOOD, vcpu_count=2, size_bytes=2**63 - 1, extra="HUGE")
    body = json.dumps([item]).replace(HUGE, f"[{number}, {'9' * 401}]")
    result = snapshots_of(faulty, start_gateway, body, "vcpuCount sizeBytes")
    assert result == {"data": {"snapshots": [{"vcpuCount": 2, "sizeBytes": 2**63 - 1}]}}


def test_a_size_beyond_64_bits_found_by_the_slow_parser_is_a_broken_item(
    faulty: FaultyUpstream, start_gateway
) -> None:
    body = broken_body(size_bytes=2**64, extra="HUGE").replace(HUGE, "9" * 401)
    result = snapshots_of(faulty, start_gateway, body)
    assert_only_the_breach_is_broken(result, ["size_bytes"])


@pytest.mark.parametrize("number", ["1e400", "9" * 401])
def test_a_count_beyond_a_double_stays_broken_when_served_from_the_cache(
    faulty: FaultyUpstream, start_gateway, number: str
) -> None:
    # The cache stores items as JSON: an infinity would come back as null, a valid count.
    faulty.respond(200, broken_body(vcpu_count="HUGE").replace(HUGE, number))
    gateway = start_gateway(faulty.url)
    for _ in range(2):
        result = gateway.query("{ snapshots { id } }", ALICE_KEY)
        assert_only_the_breach_is_broken(result, ["vcpu_count"])
    assert len(faulty.received) == 1


@pytest.mark.parametrize(
    "body",
    [
        "[NaN]",
        '[{"id": Infinity}]',
        "[" + "9" * 401 + ",",
        "[" * 100_000 + "]" * 100_000,
        "\ufeff[]",
        "[1, 2] tail " + "9" * 401,
    ],
    ids=["nan", "infinity", "truncated", "nested-too-deep", "bom", "trailing-data"],
)
def test_a_body_that_is_not_json_is_still_a_bad_response(
    faulty: FaultyUpstream, start_gateway, body: str
) -> None:
    error = error_of(faulty, start_gateway, 200, body)
    assert error["extensions"] == {"code": "UPSTREAM_BAD_RESPONSE"}


def test_a_body_in_utf16_is_a_bad_response(faulty: FaultyUpstream, start_gateway) -> None:
    faulty.respond(200, "[]".encode("utf-16"))
    result = start_gateway(faulty.url).query("{ snapshots { id } }", ALICE_KEY)
    assert result["errors"][0]["extensions"] == {"code": "UPSTREAM_BAD_RESPONSE"}


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


# The contract ignores unknown fields, and the cache keeps checked rows only, so an extra
# field nested however deep (up to orjson's 1,024 levels of reading; past them the whole body
# is refused, see below) costs the item nothing.
@pytest.mark.parametrize("levels", [200, 252, 300, 1_000])
def test_an_item_with_a_deeply_nested_extra_field_is_served(
    faulty: FaultyUpstream, start_gateway, levels: int
) -> None:
    body = json.dumps([dict(GOOD, extra="HUGE")]).replace(HUGE, nested(levels))
    result = snapshots_of(faulty, start_gateway, body)
    assert result == {"data": {"snapshots": [{"id": "good"}]}}


def test_a_lone_surrogate_is_a_broken_item_not_a_crash(
    faulty: FaultyUpstream, start_gateway
) -> None:
    # orjson refuses the body; the stdlib parser accepts "\ud800", which no UTF-8 can hold.
    body = broken_body(name="HUGE").replace(HUGE, '"\\ud800"')
    result = snapshots_of(faulty, start_gateway, body)
    assert_only_the_breach_is_broken(result, fields=None)


@pytest.mark.parametrize(
    "moment",
    ["2026-01-01", "2026-01-01T10:00:00", "2026-01-01T10:00:00.5", "2026-01-01T10:00+00:00:30"],
)
@pytest.mark.parametrize("field", ["created_at", "updated_at"])
def test_a_date_time_without_a_utc_offset_is_a_broken_item(
    faulty: FaultyUpstream, start_gateway, moment: str, field: str
) -> None:
    result = snapshots_of(faulty, start_gateway, broken_body(**{field: moment}))
    assert_only_the_breach_is_broken(result, [field])


@pytest.mark.parametrize(
    ("moment", "served"),
    [
        ("2026-01-01T10:00:00Z", "2026-01-01T10:00:00+00:00"),
        ("2026-01-01T10:00:00+02:00", "2026-01-01T10:00:00+02:00"),
        ("2026-01-01T10:00:00.250-05:30", "2026-01-01T10:00:00.250000-05:30"),
    ],
)
def test_a_date_time_with_an_offset_is_served_with_it(
    faulty: FaultyUpstream, start_gateway, moment: str, served: str
) -> None:
    body = json.dumps([dict(GOOD, created_at=moment)])
    result = snapshots_of(faulty, start_gateway, body, "createdAt")
    assert result == {"data": {"snapshots": [{"createdAt": served}]}}


def http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("99999999999999999999999999", 86_400),
        ("9" * 5_000, 86_400),
        ("86401", 86_400),
        ("0000000000000000000000017", 17),
        ("0", 0),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("\u00b2", None),  # a digit to str.isdigit, not to int()
        ("Fri, 31 Dec 9999 23:59:59 GMT", 86_400),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0),
        ("Wed, 21 Oct 99999 07:28:00 GMT", None),
    ],
)
def test_retry_after_is_clamped_to_a_day_or_null(
    faulty: FaultyUpstream, start_gateway, header: str, expected: int | None
) -> None:
    error = error_of(faulty, start_gateway, 429, "{}", **{"retry-after": header})
    assert error["extensions"] == {"code": "RATE_LIMITED", "retryAfter": expected}


def test_retry_after_as_an_http_date_still_counts_down(
    faulty: FaultyUpstream, start_gateway
) -> None:
    error = error_of(faulty, start_gateway, 429, "{}", **{"retry-after": http_date(120)})
    assert 100 <= error["extensions"]["retryAfter"] <= 120


def test_a_422_detail_is_reduced_to_loc_msg_and_type(faulty: FaultyUpstream, start_gateway) -> None:
    detail = [
        "not an object",
        ["nor", "this"],
        None,
        {
            "loc": ["query", 0, True, 1.5, None, {"deep": 1}, ["x"], "type"],
            "msg": {"not": "a string"},
            "input": "the caller's own input, echoed",
            "ctx": {"secret": "internal"},
        },
        {"loc": "query.type", "msg": "bad", "type": 42},
        {},
    ]
    error = error_of(faulty, start_gateway, 422, json.dumps({"detail": detail}))
    assert error["extensions"] == {
        "code": "BAD_USER_INPUT",
        "detail": [
            {"loc": ["query", "0", "type"], "msg": "", "type": ""},
            {"loc": [], "msg": "bad", "type": ""},
            {"loc": [], "msg": "", "type": ""},
        ],
    }


def test_a_huge_422_detail_is_capped(faulty: FaultyUpstream, start_gateway) -> None:
    entry = {"loc": ["query"] + ["x" * 300] * 100, "msg": "m" * 10_000, "type": "t" * 300}
    faulty.respond(422, json.dumps({"detail": [entry] * 100}))
    response = start_gateway(faulty.url).post("{ snapshots { id } }", ALICE_KEY)
    detail = response.json()["errors"][0]["extensions"]["detail"]
    assert len(detail) == 20
    assert {len(entry["loc"]) for entry in detail} == {20}
    assert {len(part) for entry in detail for part in entry["loc"][1:]} == {200}
    assert {(len(entry["msg"]), len(entry["type"])) for entry in detail} == {(200, 200)}
    assert len(response.content) < 200_000  # the upstream sent 4 MB of detail
