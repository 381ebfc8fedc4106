"""Wire types of `GET /v1/snapshots` (the contract: docs/upstream-contract.md).

`SnapshotInfo` validates one item strictly: a string where the contract says integer is a
breach, not something to coerce. `check_items` checks each item on its own, so one broken
item never takes the valid ones down with it, once per upstream answer, and returns rows:
each valid item as a plain list of its values in `ROW_FIELDS` order, dates normalized to ISO
8601 with an offset. Rows are what the cache keeps, so a cache hit validates nothing again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

ListType = Literal["user", "system"]


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the caller sent to prove who they are; forwarded upstream as is."""

    authorization: str | None = None
    api_key: str | None = None

    def __bool__(self) -> bool:
        return bool(self.authorization or self.api_key)

    def __repr__(self) -> str:
        # Never print a credential, not even in a traceback or a debug log.
        return (
            f"Credentials(authorization={_mask(self.authorization)}, api_key={_mask(self.api_key)})"
        )


def _mask(value: str | None) -> str:
    return "None" if value is None else "'***'"


def _iso_datetime(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 string")
    moment = datetime.fromisoformat(value)
    # GraphQL's DateTime is served with an offset; guessing one for a naive time (a date alone,
    # or a local time) would move the instant by hours, so the item is broken instead.
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("must carry a UTC offset (Z or +HH:MM)")
    if offset.seconds % 60 or offset.microseconds:
        raise ValueError("must have an offset in whole minutes (RFC 3339 cannot write seconds)")
    return moment


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_datetime)]
# GraphQL serves sizes as the 64-bit `Long`; a larger value is a contract breach, caught here.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
# GraphQL's `Int` is 32-bit: a larger vCPU count or memory size could not be served at all.
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


class SnapshotInfo(BaseModel):
    """One snapshot as the upstream sends it; unknown extra fields are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    id: str
    name: str | None = None
    status: str
    source_vm_id: str | None = None
    snapshot_type: str
    type: str = "user"
    oci_image: str | None = None
    vcpu_count: Int32 | None = None
    memory_mb: Int32 | None = None
    size_bytes: Int64 = 0
    is_public: bool = False
    last_error: str | None = None
    created_at: IsoDateTime
    updated_at: IsoDateTime


@dataclass(frozen=True, slots=True)
class BrokenItem:
    """An item that breaks the contract: where it was, its id if it had one, what was wrong."""

    index: int
    id: str | None
    fields: tuple[str, ...]


ROW_FIELDS: tuple[str, ...] = tuple(SnapshotInfo.model_fields)
Row = list[Any]


_CREATED_AT, _UPDATED_AT = ROW_FIELDS.index("created_at"), ROW_FIELDS.index("updated_at")


def row_of(info: SnapshotInfo) -> Row:
    """The item's values in `ROW_FIELDS` order, as JSON values (dates as ISO 8601 text)."""
    # A pydantic model keeps its fields in __dict__ in declaration order (ROW_FIELDS's).
    row = list(info.__dict__.values())
    row[_CREATED_AT] = info.created_at.isoformat()
    row[_UPDATED_AT] = info.updated_at.isoformat()
    return row


def check_items(items: list[Any], *, start: int = 0) -> tuple[list[Row], list[BrokenItem]]:
    """Validate an upstream answer once: the valid items as rows, and the broken ones.

    Each item first goes through `quick_row`, a plain-Python twin of `SnapshotInfo` about
    three times faster; whatever it does not accept goes through pydantic, which decides
    and names the broken fields. tests/test_quick_rows.py holds the twins equal. `start` is
    the position of `items[0]` in the whole answer (for checking it a slice at a time).
    """
    rows: list[Row] = []
    broken: list[BrokenItem] = []
    for index, item in enumerate(items, start):
        row = quick_row(item)
        if row is None:
            try:
                row = row_of(SnapshotInfo.model_validate(item))
            except ValidationError as exc:
                broken.append(BrokenItem(index, _item_id(item), _failed_fields(exc)))
                continue
        rows.append(row)
    return rows, broken


def quick_row(item: Any) -> Row | None:
    """The item's row when it plainly keeps the contract; None to let pydantic decide.

    Written out field by field: this runs once per item of every upstream answer.
    """
    if type(item) is not dict:
        return None
    get = item.get
    id_, status, kind = get("id"), get("status"), get("snapshot_type")
    if type(id_) is not str or type(status) is not str or type(kind) is not str:
        return None
    name, vm, image, error = get("name"), get("source_vm_id"), get("oci_image"), get("last_error")
    for optional in (name, vm, image, error):
        if optional is not None and type(optional) is not str:
            return None
    vcpus, memory = get("vcpu_count"), get("memory_mb")
    if not (_optional_int(vcpus, 31) and _optional_int(memory, 31)):
        return None
    list_type, size, public = get("type", "user"), get("size_bytes", 0), get("is_public", False)
    if type(list_type) is not str or type(public) is not bool or type(size) is not int:
        return None
    if not -(2**63) <= size < 2**63:
        return None
    try:
        created = _normalized_datetime(get("created_at"))
        updated = _normalized_datetime(get("updated_at"))
    except ValueError:
        return None
    # In ROW_FIELDS order.
    return [
        id_, name, status, vm, kind, list_type, image, vcpus, memory, size, public, error,
        created, updated,
    ]  # fmt: skip


def _normalized_datetime(value: Any) -> str:
    """`_iso_datetime(value).isoformat()`, without building the text again for the two forms
    upstreams send: `2026-01-01T10:00:00Z` and `2026-01-01T10:00:00+02:00`. Only those exact
    shapes qualify (Python also parses week dates, compact times, commas and offsets such as
    +02:70, which its isoformat() writes differently)."""
    if type(value) is str and _plain_shape(value):
        datetime.fromisoformat(value)  # for its ValueError on impossible dates and times
        return value[:19] + "+00:00" if len(value) == 20 else value
    return _iso_datetime(value).isoformat()


def _plain_shape(value: str) -> bool:
    if not (value.isascii() and value[4:5] == "-" and value[7:8] == "-" and value[10:11] == "T"):
        return False
    if value[13:14] != ":" or value[16:17] != ":" or not value[17:19].isdigit():
        return False
    if len(value) == 20:
        return value[19] == "Z"
    return (
        len(value) == 25
        and value[19] in "+-"
        and value[19:] != "-00:00"  # isoformat() writes it +00:00
        and value[22] == ":"
        and value[20:22].isdigit()
        and value[23] in "012345"
        and value[24].isdigit()
    )


def _optional_int(value: Any, bits: int) -> bool:
    return value is None or (type(value) is int and -(2**bits) <= value < 2**bits)


def _item_id(item: object) -> str | None:
    item_id = item.get("id") if isinstance(item, dict) else None
    return item_id if isinstance(item_id, str) else None


def _failed_fields(exc: ValidationError) -> tuple[str, ...]:
    return tuple(sorted({str(error["loc"][0]) for error in exc.errors() if error["loc"]}))
