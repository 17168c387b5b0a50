"""Getting logged rows to the server without ever making the training loop wait.

`put_row` (the training thread) appends to a bounded in-memory queue; a background
thread posts batches. When the queue is full (the server is slow) the row goes straight
to the run's journal on disk instead; when the server is away the thread moves the queue
to the journal and uploads the journal's backlog once the server answers again. Memory
stays bounded and no row is dropped while the process lives; a row the server refuses
is reported once and never blocks the rows after it (see `uploader`).

Offline, there is no thread: every row is appended to the journal as it is logged.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import httpx

from trainlens.journal import METRICS, SAMPLES, Journal
from trainlens.settings import ClientSettings
from trainlens.uploader import RunRefused, Unreachable, Uploader
from trainlens.wire import row_line

log = logging.getLogger("trainlens")

Row = tuple[int, dict[str, float], float]


# The sender thread pauses this long every YIELD_ROWS rows it encodes: a thread that
# runs Python without a pause makes the training thread wait up to the interpreter's
# switch interval (5 ms) for the GIL at its next log() call.
YIELD_ROWS = 32
YIELD_SECONDS = 0.0001


def row_lines(rows: list[Row], pause: bool = False) -> list[bytes]:
    lines = []
    for index, row in enumerate(rows):
        if pause and index and index % YIELD_ROWS == 0:
            time.sleep(YIELD_SECONDS)
        lines.append(row_line(*row))
    return lines


def sample_line(step: int, text: str, wall_time: float) -> bytes:
    record = {"step": step, "text": text}
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


class OfflineTransport:
    """Every row to the journal at once, so a killed script leaves all it logged."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        journal.ensure()

    def put_row(self, step: int, metrics: dict[str, float], wall_time: float) -> None:
        self.journal.append(METRICS, [row_line(step, metrics, wall_time)])

    def put_sample(self, step: int, text: str, wall_time: float) -> None:
        self.journal.append(SAMPLES, [sample_line(step, text, wall_time)])

    def flush(self, timeout: float | None = None) -> bool:
        self.journal.sync_to_disk()
        return True

    def close(self, timeout: float) -> bool:
        """True when nothing is left to sync (never, offline)."""
        self.journal.close()
        return False


class Transport:
    def __init__(
        self,
        client: httpx.Client,
        run_id: int,
        journal: Journal,
        settings: ClientSettings,
        report: Callable[[str], None],
    ) -> None:
        self.journal = journal
        self.settings = settings
        self.report = report
        self.uploader = Uploader(client, run_id, report)
        self._rows: deque[Row] = deque()
        self._samples: deque[tuple[int, str, float]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._inflight: list[Row] = []
        self._inflight_samples: list[tuple[int, str, float]] = []
        self._journal_offset = 0  # bytes of the journal's metrics already uploaded
        self._journal_samples = 0  # lines of the journal's samples already uploaded
        self._away_since: float | None = None
        self._retry_at = 0.0
        self._backoff = 0.0
        self._detached: str | None = None  # why the run refuses data, once it does
        self._closing = False
        self._deadline: float | None = None
        self._abandoned = False
        self.rows_spilled = 0
        self._thread = threading.Thread(target=self._loop, name="trainlens-sender", daemon=True)
        self._thread.start()

    # -- the training thread --------------------------------------------------------

    def put_row(self, step: int, metrics: dict[str, float], wall_time: float) -> None:
        with self._lock:
            if len(self._rows) < self.settings.max_buffer_rows and not self._abandoned:
                self._rows.append((step, metrics, wall_time))
                return
        # Full: the sender is stuck on a slow server. Disk, not memory, takes the row.
        self.journal.append(METRICS, [row_line(step, metrics, wall_time)])
        self.rows_spilled += 1

    def put_sample(self, step: int, text: str, wall_time: float) -> None:
        with self._lock:
            if not self._abandoned:
                self._samples.append((step, text, wall_time))
                return
        self.journal.append(SAMPLES, [sample_line(step, text, wall_time)])

    def buffered(self) -> int:
        return len(self._rows)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything logged so far has reached the server (or was refused);
        False when `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while not self._settled():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if not self._thread.is_alive():
                    return False
                self._idle.wait(0.1 if remaining is None else min(remaining, 0.1))
                self._wake.set()
        return True

    def close(self, timeout: float) -> bool:
        """Send what is left for at most `timeout` seconds, then journal the rest.
        True when everything reached the server."""
        self._deadline = time.monotonic() + timeout
        self._closing = True
        self._wake.set()
        self._thread.join(timeout + 1.0)
        with self._lock:
            self._abandoned = True
            rows = self._inflight + list(self._rows)
            samples = self._inflight_samples + list(self._samples)
            self._rows.clear()
            self._samples.clear()
            settled = self._settled()
        if rows:
            self.journal.append(METRICS, row_lines(rows))
        if samples:
            self.journal.append(SAMPLES, [sample_line(*sample) for sample in samples])
        self.journal.close()
        return settled and not rows and not samples and self._detached is None

    def _settled(self) -> bool:
        return (
            not self._rows
            and not self._samples
            and not self._inflight
            and not self._inflight_samples
            and self._journal_offset >= self.journal.size(METRICS)
            and self._journal_samples >= self._count_journal_samples()
        )

    def _count_journal_samples(self) -> int:
        if not self.journal.size(SAMPLES):
            return 0
        return len(self.journal.read_lines(SAMPLES)[0])

    # -- the sender thread -------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.settings.flush_interval)
            self._wake.clear()
            now = time.monotonic()
            if self._abandoned or (self._deadline is not None and now >= self._deadline):
                return
            waiting = self._away_since is not None and now < self._retry_at
            if self._detached is not None or (waiting and not self._closing):
                self._spill_memory()
            else:
                self._drain()
            with self._idle:
                self._idle.notify_all()
                if self._closing and (self._settled() or self._detached is not None):
                    return

    def _timeout(self) -> float:
        if self._deadline is None:
            return self.settings.http_timeout
        return max(0.05, min(self.settings.http_timeout, self._deadline - time.monotonic()))

    def _drain(self) -> None:
        """Upload the journal's backlog, then the memory queue, until empty or failing."""
        while not self._abandoned:
            try:
                if not self._drain_one():
                    return
            except Unreachable as error:
                self._went_away(error.reason)
                return
            except RunRefused as error:
                self._detach(error.reason)
                return
            self._came_back()

    def _drain_one(self) -> bool:
        batch = self.settings.batch_rows
        lines, offset = self.journal.read_lines(METRICS, self._journal_offset, batch)
        if lines:
            self.uploader.post_metrics(lines, self._timeout())
            self._journal_offset = offset
            return True
        with self._lock:
            take = min(batch, len(self._rows))
            self._inflight = [self._rows.popleft() for _ in range(take)]
        if self._inflight:
            try:
                lines = row_lines(self._inflight, pause=True)
                self.uploader.post_metrics(lines, self._timeout())
            except (Unreachable, RunRefused) as error:
                # What was not confirmed waits in the journal, in the same shape.
                self._journal_inflight(error.unsent, [])
                raise
            with self._lock:
                self._inflight = []
            return True
        if self._journal_samples < self._count_journal_samples():
            lines, _ = self.journal.read_lines(SAMPLES)
            for line in lines[self._journal_samples :]:
                self.uploader.post_sample(line, self._timeout())
                self._journal_samples += 1
            return True
        with self._lock:
            if self._samples:
                self._inflight_samples = [self._samples.popleft()]
        if self._inflight_samples:
            line = sample_line(*self._inflight_samples[0])
            try:
                self.uploader.post_sample(line, self._timeout())
            except (Unreachable, RunRefused):
                self._journal_inflight([], [line])
                raise
            with self._lock:
                self._inflight_samples = []
            return True
        return False

    def _journal_inflight(self, row_lines: list[bytes], samples: list[bytes]) -> None:
        with self._lock:
            if self._abandoned:
                return  # close() journaled them already
            self._inflight = []
            self._inflight_samples = []
        self.journal.append(METRICS, row_lines)
        self.journal.append(SAMPLES, samples)
        self.rows_spilled += len(row_lines)

    def _spill_memory(self) -> None:
        with self._lock:
            if self._abandoned:
                return
            rows = list(self._rows)
            samples = list(self._samples)
            self._rows.clear()
            self._samples.clear()
        self.journal.append(METRICS, row_lines(rows, pause=True))
        self.journal.append(SAMPLES, [sample_line(*sample) for sample in samples])
        self.rows_spilled += len(rows)

    def _went_away(self, reason: str) -> None:
        now = time.monotonic()
        if self._away_since is None:
            self._away_since = now
            self._backoff = 0.5
            self.journal.ensure()
            log.warning(
                "trainlens: server unreachable (%s); rows wait in %s, retrying",
                reason,
                self.journal.folder,
            )
        else:
            self._backoff = min(self._backoff * 2, self.settings.retry_max_seconds)
        self._retry_at = now + self._backoff
        self._spill_memory()

    def _came_back(self) -> None:
        if self._away_since is not None:
            log.warning(
                "trainlens: server reachable again after %.0f s; uploading the backlog",
                time.monotonic() - self._away_since,
            )
            self._away_since = None
            self._backoff = 0.0

    def _detach(self, reason: str) -> None:
        self._detached = reason
        self.journal.ensure()
        self.report(
            f"the server refuses this run's data ({reason}); rows go to {self.journal.folder}"
        )
        self._spill_memory()
