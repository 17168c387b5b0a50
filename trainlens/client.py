"""`trainlens.Run`: one run of a user's script, online (posting to a server) or offline
(journaling to a folder that `trainlens sync` uploads later).

The training thread only validates and enqueues: `log()` checks every key and value
against the server's rules at once (a bad row fails in the caller, never in a batch),
then hands the row to the transport. A second thread beats the run's heartbeat and
samples system metrics, so a crashed script (no heartbeat) is told apart from a hung one
(heartbeats, no steps).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from trainlens.journal import Journal, default_folder_name
from trainlens.settings import ClientSettings
from trainlens.system import SystemMonitor
from trainlens.transport import OfflineTransport, Transport
from trainlens.uploader import describe_error, response_detail
from trainlens.wire import MAX_STEP, check_metrics, check_step, encode_float

if TYPE_CHECKING:
    from trainlens.reader import History

log = logging.getLogger("trainlens")

FINISH_STATUSES = ("completed", "failed", "stopped")


def dashboard_url(server_url: str, run_id: int) -> str:
    return f"{server_url.rstrip('/')}/run.html?id={run_id}"


def make_client(settings: ClientSettings) -> httpx.Client:
    headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
    return httpx.Client(base_url=settings.url, headers=headers, timeout=settings.http_timeout)


def plain_json(value: Any) -> Any:
    """A config as JSON the server takes: numpy scalars become numbers, non-finite
    floats their wire strings, anything else unknown its str()."""
    if isinstance(value, Mapping):
        return {str(key): plain_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain_json(item) for item in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return encode_float(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        try:
            return plain_json(value.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)


class Run:
    """A run of your script. Make one with `trainlens.init(...)`."""

    def __init__(
        self,
        name: str | None,
        config: dict[str, Any],
        settings: ClientSettings,
        journal: Journal,
        client: httpx.Client | None,
        run_id: int | None,
    ) -> None:
        self.name = name
        self.config = config
        self.settings = settings
        self.journal = journal
        self.id = run_id
        self.summary: dict[str, float] = {}
        self.errors: list[str] = []
        self.finished = False
        self._client = client
        self._names: set[str] = set()
        self._next_step = 0
        self._last_step: int | None = None
        self._system_step: int | None = None
        self._crash: str | None = None
        self._stop = threading.Event()
        self.transport: Transport | OfflineTransport
        if client is None or run_id is None:
            self.transport = OfflineTransport(journal)
        else:
            self.transport = Transport(client, run_id, journal, settings, self._report)
        # Built here, not in the thread: importing NVML while the loop runs would hold
        # the GIL against the training thread's first log() calls.
        self._monitor = SystemMonitor() if settings.system_metrics else None
        self._pulse = threading.Thread(target=self._beat, name="trainlens-pulse", daemon=True)
        self._pulse.start()

    # -- what users read ---------------------------------------------------------------

    @property
    def offline(self) -> bool:
        return self.id is None

    @property
    def url(self) -> str | None:
        """The run's page on the dashboard (None offline, until synced)."""
        return None if self.id is None else dashboard_url(self.settings.url, self.id)

    @property
    def folder(self) -> Path:
        """Where this run journals what it could not send (created only when needed)."""
        return self.journal.folder

    def __repr__(self) -> str:
        where = f"id={self.id}" if self.id is not None else f"offline in {self.folder}"
        return f"<trainlens.Run {self.name!r} {where}>"

    # -- logging -----------------------------------------------------------------------

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Record metrics at `step` (default: one more than the last step logged).

        Values are numbers (Python, numpy or 0-d torch scalars), or the strings "NaN",
        "Infinity", "-Infinity". A step may be logged in several calls. A bad key or
        value raises ValueError/TypeError naming it, and nothing of the row is kept."""
        if self.finished:
            raise RuntimeError("this run has finished; start another with trainlens.init()")
        row = check_metrics(metrics, self._names)
        if step is None:
            step = self._next_step
        elif type(step) is not int or not 0 <= step <= MAX_STEP:
            step = check_step(step)
        self._next_step = step + 1
        self._last_step = step
        self.summary.update(row)
        self.transport.put_row(step, row, time.time())

    def sample(self, step: int, text: str) -> None:
        """Record a text sample generated by the model at `step`."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, not {type(text).__name__}")
        self.transport.put_sample(check_step(step), text, time.time())

    def history(
        self,
        keys: list[str] | str | None = None,
        start: int | None = None,
        end: int | None = None,
        page_size: int = 10_000,
    ) -> History:
        """What the server holds of this run at full resolution, as `trainlens.history`
        returns it (`flush()` first to include rows still on their way)."""
        if self.id is None:
            raise RuntimeError("an offline run is not on a server: trainlens sync it first")
        from trainlens.reader import history

        url, token = self.settings.url, self.settings.token
        return history(self.id, keys, start, end, url=url, token=token, page_size=page_size)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything logged so far reached the server; False on timeout."""
        return self.transport.flush(timeout)

    def _report(self, message: str) -> None:
        self.errors.append(message)
        log.warning("trainlens: %s", message)

    # -- heartbeat and system metrics ----------------------------------------------------

    def _beat(self) -> None:
        monitor = self._monitor
        next_beat = next_sample = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + self.settings.heartbeat_interval
                self._send_heartbeat()
            if monitor is not None and now >= next_sample:
                next_sample = now + self.settings.system_interval
                self._log_system(monitor)
            self._stop.wait(max(0.01, min(next_beat, next_sample if monitor else next_beat) - now))

    def _send_heartbeat(self) -> None:
        if self._client is None or self.id is None:
            return
        try:
            self._client.post(f"/api/runs/{self.id}/heartbeat", timeout=5.0)
        except httpx.HTTPError:
            pass  # the data path notices an outage and says so, once

    def _log_system(self, monitor: Any) -> None:
        step = self._last_step
        if step is None or step == self._system_step or self.finished:
            # Once per new step at most: a hung script then writes no new points, so
            # the `stalled` rule still sees it stop (its heartbeat says it is alive).
            return
        self._system_step = step
        try:
            row = monitor.sample()
        except Exception as error:  # a flaky driver must never touch training
            log.debug("trainlens: system metrics unavailable: %s", error)
            return
        if row:
            self.transport.put_row(step, row, time.time())

    # -- the end -------------------------------------------------------------------------

    def finish(
        self,
        exit_code: int | None = None,
        status: str | None = None,
        error: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """End the run: send what is left (for at most `timeout`, default
        TRAINLENS_FINISH_TIMEOUT seconds), leave anything unsent in the journal and say
        how to sync it. Never raises once the training loop has run."""
        if self.finished:
            return
        if status is None:
            status = "failed" if exit_code else "completed"
        if status not in FINISH_STATUSES:
            raise ValueError(f"status must be one of {', '.join(FINISH_STATUSES)}, not {status!r}")
        if error is None and exit_code:
            error = f"exit code {exit_code}"
        self.finished = True
        self._stop.set()
        wait = self.settings.finish_timeout if timeout is None else timeout
        started = time.monotonic()
        try:
            self._finish(status, error, wait, started)
        except Exception as failure:  # never cost a run its exit status
            log.warning("trainlens: finishing the run failed: %s", describe_error(failure))
        finally:
            _forget(self)

    def _finish(self, status: str, error: str | None, wait: float, started: float) -> None:
        self._pulse.join(timeout=1.0)
        everything_sent = self.transport.close(wait)
        told = False
        if everything_sent and self._client is not None and self.id is not None:
            remaining = max(1.0, wait - (time.monotonic() - started))
            told = self._post_finish(status, error, remaining)
        if not told:
            self.journal.update_meta(finish={"status": status, "error": error})
            self.journal.ensure()
            target = f" (run {self.url})" if self.url else ""
            log.warning(
                "trainlens: %s not sent%s; upload it with: trainlens sync %s",
                "the run was" if self.offline else "part of the run was",
                target,
                self.folder,
            )
        if self._client is not None:
            self._client.close()

    def _post_finish(self, status: str, error: str | None, timeout: float) -> bool:
        assert self._client is not None
        try:
            response = self._client.post(
                f"/api/runs/{self.id}/finish",
                json={"status": status, "error": error[-20_000:] if error else None},
                timeout=timeout,
            )
        except httpx.HTTPError as failure:
            log.warning("trainlens: could not report the run's end: %s", describe_error(failure))
            return False
        if response.status_code == 409:
            return True  # ended already (stopped from the dashboard): nothing to add
        if not response.is_success:
            log.warning(
                "trainlens: the server refused the run's end (%s): %s",
                response.status_code,
                response_detail(response),
            )
            return response.status_code < 500
        return True

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if error is None:
            self.finish()
        elif isinstance(error, KeyboardInterrupt):
            self.finish(status="stopped", error="KeyboardInterrupt")
        else:
            text = "".join(traceback.format_exception(kind, error, trace))
            self.finish(status="failed", error=text[-10_000:])


# -- starting a run ------------------------------------------------------------------------


def start(name: str | None, given: Mapping[str, Any] | None, settings: ClientSettings) -> Run:
    config: dict[str, Any] = plain_json(dict(given or {}))
    folder = settings.offline_dir / default_folder_name(name)
    meta: dict[str, Any] = {
        "format": 1,
        "name": name,
        "config": config,
        "created_at": time.time(),
        "runs": {},
    }
    journal = Journal(folder.resolve(), meta)
    if settings.mode == "offline":
        return Run(name, config, settings, journal, None, None)
    client = make_client(settings)
    body = {"name": name, "source": "external", "config": config}
    try:
        response = client.post("/api/runs", json=body, timeout=settings.init_timeout)
    except httpx.HTTPError as failure:
        return _offline(name, config, settings, journal, client, describe_error(failure))
    if response.status_code >= 500:
        reason = f"HTTP {response.status_code}"
        return _offline(name, config, settings, journal, client, reason)
    if not response.is_success:
        client.close()
        detail = response_detail(response)
        if response.status_code in (401, 403):
            raise PermissionError(f"trainlens: {settings.url} refused the token: {detail}")
        status = response.status_code
        raise ValueError(f"trainlens: the server refused the run ({status}): {detail}")
    created = response.json()
    run_id = int(created["id"])
    journal.meta["runs"] = {settings.url: {"id": run_id, "created_at": created["created_at"]}}
    return Run(name, config, settings, journal, client, run_id)


def _offline(
    name: str | None,
    config: dict[str, Any],
    settings: ClientSettings,
    journal: Journal,
    client: httpx.Client,
    reason: str,
) -> Run:
    client.close()
    log.warning(
        "trainlens: %s unreachable (%s); logging offline to %s (upload later: trainlens sync %s)",
        settings.url,
        reason,
        journal.folder,
        journal.folder,
    )
    return Run(name, config, settings, journal, None, None)


# -- the current run (module-level trainlens.log / finish) ---------------------------------

_current: list[Run] = []
_hooks_installed = False


def set_current(run: Run) -> None:
    global _hooks_installed
    _current[:] = [run]
    if not _hooks_installed:
        _hooks_installed = True
        import atexit

        atexit.register(_finish_at_exit)
        previous = sys.excepthook

        def remember_crash(
            kind: type[BaseException], error: BaseException, trace: TracebackType | None
        ) -> None:
            for open_run in _current:
                text = "".join(traceback.format_exception(kind, error, trace))
                open_run._crash = text[-10_000:]
            previous(kind, error, trace)

        sys.excepthook = remember_crash


def current() -> Run | None:
    return _current[0] if _current else None


def _forget(run: Run) -> None:
    if run in _current:
        _current.remove(run)
    import trainlens

    if getattr(trainlens, "run", None) is run:
        trainlens.run = None


def _finish_at_exit() -> None:
    """A script that never called finish(): end its run as its process ends."""
    for open_run in list(_current):
        if open_run._crash is not None:
            open_run.finish(status="failed", error=open_run._crash)
        else:
            open_run.finish()
