"""`quick_row`, the fast twin of pydantic's `SnapshotInfo`, never accepts what pydantic refuses
and gives the very row pydantic's path gives: checked on generated items, valid and not."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from snapgraph.upstream.models import ROW_FIELDS, SnapshotInfo, quick_row, row_of

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1, 2**63]),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.sampled_from(
        [
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00+02:00",
            "2026-01-01T10:00:00.123456-05:30",
            "2026-01-01",
            "2026-01-01T10:00:00",
            "2026-01-01T10:00+00:00:30",
            "2026-01-01T10:00:00-00:00",
            "2026-01-01 10:00:00+00:00",
            "2026-01-01T10:00:00z",
            "2026-01-01T10:00:00+0530",
            "2026-01-01T10:00:00-05:30",
            "2026-01-01T24:00:00+00:00",
            "2026-13-01T10:00:00Z",
            "2026-01-01T10:00:00.5Z",
            "2026-01-01T10:00Z",
            "2026-01-01T10:00:00+14:00",
            "2026-01-01T10:00:00+24:00",
            "20260101T100000Z",
            "2026-W01-1T10:00:00+02:00",
            "2026-W01-1T10:00:00Z",
            "2026-01-01T10:00:00+02:70",
            "2026-01-01T100000.5+02:00",
            "2026-01-01T100000.5Z",
            "2026-01-01T10:00,00+02:00",
            "2026-01-01T10:00.00Z",
            "2020-01-01T10:00:00+02.00",
            "2026-01-01T10:00:00+2:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59+23:59",
            "not a date",
        ]
    ),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
GOOD = {
    "id": st.text(max_size=6),
    "name": st.one_of(st.none(), st.text(max_size=6)),
    "status": st.sampled_from(["ready", "creating"]),
    "source_vm_id": st.one_of(st.none(), st.text(max_size=4)),
    "snapshot_type": st.just("full"),
    "type": st.sampled_from(["user", "system"]),
    "oci_image": st.none(),
    "vcpu_count": st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
    "memory_mb": st.one_of(st.none(), st.integers(0, 2**31 - 1)),
    "size_bytes": st.integers(-(2**63), 2**63 - 1),
    "is_public": st.booleans(),
    "last_error": st.none(),
    "created_at": st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.25+00:00"]),
    "updated_at": st.sampled_from(["2026-02-01T00:00:00+02:00", "2026-02-01T00:00:00-00:00"]),
}


@st.composite
def items(draw: st.DrawFn) -> Any:
    """Mostly plausible items with a few fields missing, changed or of another type."""
    if draw(st.integers(0, 20)) == 0:
        return draw(SCALARS)
    item = {name: draw(strategy) for name, strategy in GOOD.items()}
    for name in draw(st.lists(st.sampled_from(ROW_FIELDS), max_size=3)):
        if draw(st.booleans()):
            item.pop(name, None)
        else:
            item[name] = draw(SCALARS)
    if draw(st.booleans()):
        item["extra_field"] = draw(SCALARS)
    return item


@settings(max_examples=3000, deadline=None)
@given(item=items())
def test_quick_rows_equal_pydantic_rows(item: Any) -> None:
    try:
        expected = row_of(SnapshotInfo.model_validate(item))
    except ValidationError:
        assert quick_row(item) is None
        return
    assert quick_row(item) == expected  # every item pydantic accepts, the quick path does too


def test_a_plain_valid_item_takes_the_quick_path() -> None:
    item = {
        "id": "s1",
        "status": "ready",
        "snapshot_type": "full",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00+00:00",
    }
    assert quick_row(item) == row_of(SnapshotInfo.model_validate(item))
    assert quick_row(item) is not None
