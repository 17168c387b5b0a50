"""Worker leases: which worker processes are alive, by name.

A worker registers under a name (one per slot-holding process: `host:embedded` for the
one `serve` starts) and renews its lease with every heartbeat. A second process that
asks for a name whose lease is fresh is refused, so a `serve` restarted after a crash
cannot start a second worker beside a survivor of the first; a lease nobody renews
expires after the heartbeat timeout."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, now


class WorkerLease(Base):
    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    instance: Mapped[str] = mapped_column(String(64))  # this process's random id
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int]
    slots: Mapped[int]
    started_at: Mapped[float] = mapped_column(default=now)
    seen_at: Mapped[float] = mapped_column(default=now)
