"""Text corpora uploaded for training; the text itself lives in a file under the data dir."""

from __future__ import annotations

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, now


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    filename: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    n_chars: Mapped[int] = mapped_column(BigInteger)
    n_symbols: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(default=now)
