"""One run, in a child process of the worker: read the claimed run, fetch its dataset
over the API (cached by sha256), train it logging through the `trainlens` client,
leave a result file, exit. Under torchrun every rank runs this; rank 0 logs.

    python -m trainer.job --run-id N      # after the worker wrote runs/N/run.json

The process reaches the API only (TRAINLENS_URL, TRAINLENS_WORKER_TOKEN), never the
database.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from trainer.config import TrainConfig
from trainer.corpus import BUILTIN_DATASET, builtin_corpus

log = logging.getLogger("trainlens.job")

RESULT_FILE = "result.json"  # how the run ended, for the worker
RUN_FILE = "run.json"  # the claimed run (config, dataset, files), written by the worker
DATASET_CACHE = "dataset-cache"
WATCH_SECONDS = 1.0
CHECKPOINTS = ("ckpt_latest.pt", "ckpt_best.pt")  # each with its .json info beside it
OUTPUT_LOG = "output.log"  # the process's stdout and stderr, kept by the worker
FILE_CHUNK = 1024 * 1024


class RunWatch:
    """Asks the loop to stop when the run is no longer `running` at the API (a stop
    request, a deletion, a watchdog's verdict) or when the worker that started this
    process has died: a run must not go on training unsupervised. Stop requests also
    arrive as SIGTERM from the worker; this covers a worker that is gone."""

    def __init__(
        self, client: httpx.Client, run_id: int, worker_pid: int | None, stop: threading.Event
    ) -> None:
        self.client, self.run_id, self.worker_pid = client, run_id, worker_pid
        self.reason: str | None = None
        self._stop = stop
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="run-watch", daemon=True)
        self._thread.start()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        while not self._done.wait(WATCH_SECONDS):
            reason = self._check()
            if reason is not None:
                self.reason = reason
                self._stop.set()
                return

    def _check(self) -> str | None:
        if self.worker_pid is not None and not _alive(self.worker_pid):
            return f"worker process {self.worker_pid} vanished"
        try:
            response = self.client.get(f"/api/workers/runs/{self.run_id}", timeout=10)
        except httpx.HTTPError:
            return None  # the API away for a moment is no reason to stop training
        if response.status_code == 404:
            return "run deleted"
        if not response.is_success:
            return None
        status = response.json()["status"]
        return None if status == "running" else f"run is {status}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed parent not yet reaped is a zombie: dead all the same
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def dataset_text(client: httpx.Client, data_dir: Path, name: str, sha256: str | None) -> str:
    """The corpus's text: built in, or downloaded once per content into the data dir's
    cache (checked against its sha256), so workers share no disk with the API."""
    if name == BUILTIN_DATASET:
        return builtin_corpus()
    if sha256 is None:
        raise ValueError(f"dataset {name!r} not found")
    cached = data_dir / DATASET_CACHE / f"{sha256}.txt"
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.partial")
        digest = hashlib.sha256()
        with client.stream("GET", f"/api/workers/datasets/{name}") as response:
            if response.is_error:
                response.read()
                raise FileNotFoundError(
                    f"dataset {name!r}: the API answered {response.status_code}: "
                    f"{response.text[:300]}"
                )
            with partial.open("wb") as out:
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    out.write(chunk)
        if digest.hexdigest() != sha256:
            partial.unlink(missing_ok=True)
            raise ValueError(
                f"dataset {name!r}: downloaded text has sha256 {digest.hexdigest()[:12]}…, "
                f"expected {sha256[:12]}… (it changed on the server?)"
            )
        os.replace(partial, cached)
    return cached.read_text(encoding="utf-8")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(FILE_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _saved_step(info: bytes | str) -> int:
    try:
        return int(json.loads(info)["step"])
    except (ValueError, KeyError, TypeError):
        return -1


def shares_disk_with_api(claimed: dict[str, Any], out_dir: Path) -> bool:
    """Whether the run's folder here is the API's own (a worker on the API's disk, like
    the one `serve` starts): then its checkpoints need not move."""
    stat = out_dir.stat()
    return (stat.st_dev, stat.st_ino) == (claimed["files"]["device"], claimed["files"]["inode"])


class RunFiles:
    """The run's checkpoints between this host and the API: fetched by the training
    process before it trains, handed over by the worker once that process has exited.
    On the API's own disk nothing moves."""

    def __init__(self, client: httpx.Client, claimed: dict[str, Any], out_dir: Path) -> None:
        self.client = client
        self.run_id = int(claimed["id"])
        self.worker = claimed["worker"]
        self.held = claimed["files"]["files"]
        self.shared = shares_disk_with_api(claimed, out_dir)
        self.out_dir = out_dir

    def fetch_newer_checkpoints(self) -> None:
        """Resuming a run another host trained last: take the API's checkpoint when it
        is further along than this host's own copy (which may be newer still, when this
        host was killed before it could hand its copy over)."""
        if self.shared:
            return
        for checkpoint in CHECKPOINTS:
            info_name = checkpoint.replace(".pt", ".json")
            if checkpoint not in self.held or info_name not in self.held:
                continue
            remote_info = self._get(info_name)
            local_info = self.out_dir / info_name
            local_step = _saved_step(local_info.read_text()) if local_info.exists() else -1
            local_pt = self.out_dir / checkpoint
            if local_pt.exists() and _saved_step(remote_info) <= local_step:
                continue
            log.info("fetching %s (step %d) from the API", checkpoint, _saved_step(remote_info))
            self._download(checkpoint, self.held[checkpoint]["sha256"])
            partial = local_info.with_name(f".{info_name}.fetched")
            partial.write_bytes(remote_info)
            os.replace(partial, local_info)

    def hand_over(self) -> None:
        """Give the API this run's checkpoints and log, so any host can resume it and
        the dashboard lists them. One try per file (a failure is logged): the local
        copies stay either way."""
        if self.shared:
            return
        for name in (*CHECKPOINTS, *(c.replace(".pt", ".json") for c in CHECKPOINTS), OUTPUT_LOG):
            path = self.out_dir / name
            if not path.exists():
                continue
            try:
                self._upload(name, path)
            except httpx.HTTPError as error:
                log.warning("could not hand %s over to the API: %s", name, error)

    def _get(self, name: str) -> bytes:
        response = self.client.get(f"/api/workers/runs/{self.run_id}/files/{name}")
        response.raise_for_status()
        return response.content

    def _download(self, name: str, sha256: str | None) -> None:
        target = self.out_dir / name
        partial = target.with_name(f".{name}.fetching")
        digest = hashlib.sha256()
        with self.client.stream("GET", f"/api/workers/runs/{self.run_id}/files/{name}") as answer:
            answer.raise_for_status()
            with partial.open("wb") as out:
                for chunk in answer.iter_bytes(FILE_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        if sha256 is not None and digest.hexdigest() != sha256:
            partial.unlink(missing_ok=True)
            raise ValueError(f"{name} fetched from the API does not match its sha256")
        os.replace(partial, target)

    def _upload(self, name: str, path: Path) -> None:
        def chunks() -> Iterator[bytes]:
            with path.open("rb") as handle:
                while chunk := handle.read(FILE_CHUNK):
                    yield chunk

        response = self.client.put(
            f"/api/workers/{self.worker['name']}/runs/{self.run_id}/files/{name}",
            params={"instance": self.worker["instance"]},
            content=chunks(),
            headers={"Content-Type": "application/octet-stream"},
            timeout=None,
        )
        response.raise_for_status()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-id", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not every heartbeat
    # Until the training loop installs its own handler (after torch has loaded and the
    # data is ready, seconds from now), a SIGTERM from the worker means "stop" too.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())

    # Imported here: the torch import is this process's business, not the worker's.
    from trainer.sink import ClientSink, NullSink
    from trainer.train import train

    url = os.environ.get("TRAINLENS_URL", "http://127.0.0.1:8000").rstrip("/")
    token = os.environ.get("TRAINLENS_WORKER_TOKEN") or os.environ.get("TRAINLENS_TOKEN") or None
    data_dir = Path(os.environ.get("TRAINLENS_DATA_DIR", "./var"))
    out_dir = data_dir / "runs" / str(args.run_id)
    claimed = json.loads((out_dir / RUN_FILE).read_text())
    config = TrainConfig(**claimed["config"])
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    log.info("run %d: rank %d of %d", args.run_id, rank, world)
    is_main = rank == 0
    worker_pid = os.environ.get("TRAINLENS_WORKER_PID")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = httpx.Client(base_url=url, headers=headers, timeout=60)
    watch = RunWatch(client, args.run_id, int(worker_pid) if worker_pid else None, stop)
    sink = ClientSink(url, args.run_id, token, out_dir / "unsent") if is_main else NullSink()
    files = RunFiles(client, claimed, out_dir)
    try:
        dataset = claimed["dataset"]
        log.info("loading dataset %s", dataset["name"])
        text = dataset_text(client, data_dir, dataset["name"], dataset["sha256"])
        if is_main:
            files.fetch_newer_checkpoints()
        resume = (out_dir / "ckpt_latest.pt").exists()
        result = train(config, text, out_dir, sink, watch, resume=resume)
    finally:
        watch.close()
        sink.close()
    client.close()
    if is_main:
        reason = watch.reason or result.reason
        record = {"status": result.status, "step": result.step, "reason": reason}
        _write_result(out_dir, record)
    return 0


def _write_result(out_dir: Path, record: dict[str, object]) -> None:
    partial = out_dir / (RESULT_FILE + ".partial")
    partial.write_text(json.dumps(record))
    os.replace(partial, out_dir / RESULT_FILE)


if __name__ == "__main__":
    code = main()
    # Everything is written and sent by now. Skip the interpreter's teardown with torch
    # loaded (seconds on a busy machine): a stop should end when its checkpoint is safe.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
