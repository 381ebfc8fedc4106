"""The reference upstream's data: users with credentials, their snapshots, system snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GIB = 2**30


@dataclass(frozen=True)
class User:
    id: str
    token: str
    api_key: str


@dataclass(frozen=True)
class Snapshot:
    """One row; `fields` is the JSON the upstream sends, `owner` None for system snapshots."""

    owner: str | None
    fields: dict[str, Any]


@dataclass(frozen=True)
class Dataset:
    users: list[User]
    snapshots: list[Snapshot] = field(default_factory=list)

    @classmethod
    def demo(cls) -> Dataset:
        """Two demo users, sizes above 2^31, null optional fields, a failed snapshot, and a
        legacy row that omits every field with a default."""
        return cls(users=list(DEMO_USERS), snapshots=list(DEMO_SNAPSHOTS))

    @classmethod
    def generated(cls, users: int, per_user: int = 3) -> Dataset:
        """`users` users named user-000..., each with `per_user` snapshots, plus the system ones."""
        people = [User(f"user-{n:03d}", f"token-{n:03d}", f"key-{n:03d}") for n in range(users)]
        rows = [
            _user_snapshot(person.id, f"snap-{person.id}-{i}", size=(i + 1) * 3 * GIB)
            for person in people
            for i in range(per_user)
        ]
        return cls(users=people, snapshots=rows + list(SYSTEM_SNAPSHOTS))


def _user_snapshot(owner: str, snapshot_id: str, *, size: int) -> Snapshot:
    return Snapshot(
        owner,
        {
            "id": snapshot_id,
            "name": f"{owner} {snapshot_id}",
            "status": "ready",
            "source_vm_id": f"vm-{owner}",
            "snapshot_type": "full",
            "type": "user",
            "oci_image": None,
            "vcpu_count": 2,
            "memory_mb": 2048,
            "size_bytes": size,
            "is_public": False,
            "last_error": None,
            "created_at": "2026-11-01T09:00:00Z",
            "updated_at": "2026-11-01T09:05:00Z",
        },
    )


DEMO_USERS = (
    User("alice", "demo-alice-token", "demo-alice-key"),
    User("bob", "demo-bob-token", "demo-bob-key"),
)

SYSTEM_SNAPSHOTS = (
    Snapshot(
        None,
        {
            "id": "sys-ubuntu-24.04",
            "name": "Ubuntu 24.04 base",
            "status": "ready",
            "source_vm_id": None,
            "snapshot_type": "oci",
            "type": "system",
            "oci_image": "docker.io/library/ubuntu:24.04",
            "vcpu_count": None,
            "memory_mb": None,
            "size_bytes": 12 * GIB + 345,
            "is_public": True,
            "last_error": None,
            "created_at": "2026-01-15T00:00:00+00:00",
            "updated_at": "2026-01-15T00:00:00+00:00",
        },
    ),
    Snapshot(
        None,
        {
            "id": "sys-python-3.12",
            "name": "Python 3.12",
            "status": "ready",
            "source_vm_id": None,
            "snapshot_type": "oci",
            "type": "system",
            "oci_image": "docker.io/library/python:3.12-slim",
            "vcpu_count": 1,
            "memory_mb": 1024,
            "size_bytes": 734_003_200,
            "is_public": True,
            "last_error": None,
            "created_at": "2026-02-01T12:00:00+00:00",
            "updated_at": "2026-03-01T12:00:00+00:00",
        },
    ),
    # Not public: no user may see it.
    Snapshot(
        None,
        {
            "id": "sys-internal-builder",
            "name": "internal builder",
            "status": "ready",
            "source_vm_id": None,
            "snapshot_type": "oci",
            "type": "system",
            "oci_image": "registry.internal/builder:1",
            "vcpu_count": 8,
            "memory_mb": 16384,
            "size_bytes": 40 * GIB,
            "is_public": False,
            "last_error": None,
            "created_at": "2026-02-01T12:00:00+00:00",
            "updated_at": "2026-02-01T12:00:00+00:00",
        },
    ),
)

DEMO_SNAPSHOTS = (
    Snapshot(
        "alice",
        {
            "id": "snap-alice-dev",
            "name": "dev box before upgrade",
            "status": "ready",
            "source_vm_id": "vm-alice-1",
            "snapshot_type": "full",
            "type": "user",
            "oci_image": None,
            "vcpu_count": 4,
            "memory_mb": 8192,
            "size_bytes": 5_368_709_123,  # > 2^31: a 32-bit Int would null the whole list
            "is_public": False,
            "last_error": None,
            "created_at": "2026-11-20T08:30:00Z",
            "updated_at": "2026-11-20T08:31:12.250000Z",
        },
    ),
    Snapshot(
        "alice",
        {
            "id": "snap-alice-failed",
            "name": None,
            "status": "failed",
            "source_vm_id": "vm-alice-2",
            "snapshot_type": "full",
            "type": "user",
            "oci_image": None,
            "vcpu_count": 2,
            "memory_mb": 4096,
            "size_bytes": 0,
            "is_public": False,
            "last_error": "disk quota exceeded while writing memory image",
            "created_at": "2026-11-21T10:00:00+01:00",
            "updated_at": "2026-11-21T10:02:00+01:00",
        },
    ),
    # A legacy row: optional fields absent, so the contract's defaults apply.
    Snapshot(
        "alice",
        {
            "id": "snap-alice-legacy",
            "status": "ready",
            "snapshot_type": "full",
            "created_at": "2025-06-01T00:00:00Z",
            "updated_at": "2025-06-01T00:00:00Z",
        },
    ),
    Snapshot(
        "bob",
        {
            "id": "snap-bob-db",
            "name": "postgres fixture",
            "status": "ready",
            "source_vm_id": "vm-bob-1",
            "snapshot_type": "full",
            "type": "user",
            "oci_image": "docker.io/library/postgres:17",
            "vcpu_count": 2,
            "memory_mb": 2048,
            "size_bytes": 3 * GIB,
            "is_public": False,
            "last_error": None,
            "created_at": "2026-11-22T14:00:00Z",
            "updated_at": "2026-11-22T14:00:00Z",
        },
    ),
    *SYSTEM_SNAPSHOTS,
)
