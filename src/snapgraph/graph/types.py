"""The GraphQL types: what a caller sees of a snapshot."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from enum import Enum
from typing import Any, NewType

import strawberry

from snapgraph.upstream.models import ROW_FIELDS

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _serialize_long(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("Long must be an integer")
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("Long must fit in 64 bits")
    return value


# A Long as a string is written as GraphQL writes an Int: ASCII digits after an optional
# minus sign. (str.isdigit and int() also read "١٢٣", "²" and fullwidth digits as numbers,
# and int() takes "1_000" and " 1 ".) 19 digits hold every 64-bit integer; int() of a longer
# string only costs time.
_DECIMAL = re.compile(r"-?[0-9]{1,19}")


def _parse_long(value: object) -> int:
    if isinstance(value, str):
        if not _DECIMAL.fullmatch(value):
            raise ValueError("Long must be a number, or a string of ASCII digits (at most 19)")
        value = int(value)
    return _serialize_long(value)


Long = NewType("Long", int)
LONG_SCALAR = strawberry.scalar(
    name="Long",
    description=(
        "A signed 64-bit integer, serialized as a JSON number. Exact in every JSON parser that "
        "keeps 64-bit integers; JavaScript's JSON.parse is exact only up to 2^53 - 1 "
        "(9,007,199,254,740,991 bytes = 8 PiB), far above any disk snapshot. Accepted as input "
        "as a number or a decimal string."
    ),
    serialize=_serialize_long,
    parse_value=_parse_long,
)


@strawberry.enum(description="Which snapshots to list.")
class SnapshotType(Enum):
    USER = strawberry.enum_value("user", description="Only the caller's own snapshots.")
    SYSTEM = strawberry.enum_value("system", description="Only public system snapshots.")


@strawberry.federation.type(
    keys=["id"], description="A point-in-time snapshot of a sandbox VM's disk and memory."
)
class Snapshot:
    id: strawberry.ID = strawberry.field(description="Unique id of the snapshot.")
    name: str | None = strawberry.field(description="Human-readable name, if one was given.")
    status: str = strawberry.field(
        description="Lifecycle status as the service reports it (e.g. ready, creating, failed)."
    )
    source_vm_id: str | None = strawberry.field(
        description="Id of the VM the snapshot was taken from; null for images built otherwise."
    )
    snapshot_type: str = strawberry.field(
        description="How the snapshot was made, as the service reports it (e.g. full, oci)."
    )
    type: str = strawberry.field(
        description='Owner class: "user" for the caller\'s own, "system" for public ones. '
        'Defaults to "user" when the service omits it.'
    )
    oci_image: str | None = strawberry.field(description="OCI image the snapshot was built from.")
    vcpu_count: int | None = strawberry.field(description="Virtual CPUs of the captured VM.")
    memory_mb: int | None = strawberry.field(description="Memory of the captured VM, in MiB.")
    size_bytes: Long = strawberry.field(
        description="Size on disk in bytes (64-bit; 0 when the service omits it)."
    )
    is_public: bool = strawberry.field(
        description="Whether every user can see it (false when the service omits it)."
    )
    last_error: str | None = strawberry.field(
        description="Why the last operation failed, if it did."
    )
    created_at: datetime = strawberry.field(description="When the snapshot was created (ISO-8601).")
    updated_at: datetime = strawberry.field(
        description="When the snapshot last changed (ISO-8601)."
    )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Snapshot:
        """A snapshot from a checked row (values in `ROW_FIELDS` order, dates as ISO text)."""
        values = dict(zip(ROW_FIELDS, row, strict=True))
        values["created_at"] = datetime.fromisoformat(values["created_at"])
        values["updated_at"] = datetime.fromisoformat(values["updated_at"])
        return cls(**values)
