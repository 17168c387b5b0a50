"""`trainlens import tensorboard LOGDIR`: runs logged to TensorBoard, diagnosed by trainlens.

Every folder under LOGDIR that holds event files becomes one external run, named after
the folder relative to LOGDIR (`LOGDIR/exp1` -> `exp1`; event files in LOGDIR itself ->
LOGDIR's own name). Every scalar point is read with TensorBoard's own event-file loader
(never its accumulator's default, a 1,000-point sample per tag); tags are mapped to the
canonical keys the rules judge (`loss` -> `train/loss`, `eval/loss` -> `val/loss`,
`learning_rate` -> `train/lr`, ...), and the rows are posted in batches through the
client's uploader (a row the server refuses is reported and skipped, never the batch).

Importing again is safe: a folder's run records its event files in its config, and a
second import finds that run and posts the points to it again; writes are idempotent
upserts, so nothing is duplicated and points added to the log since are filled in.
tensorboard is imported only when this command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from trainlens.client import dashboard_url, make_client
from trainlens.integrations.keys import KeyMapper
from trainlens.settings import ClientSettings
from trainlens.uploader import RunRefused, Unreachable, Uploader
from trainlens.wire import row_line

EVENT_FILE_MARK = "tfevents"
BATCH_ROWS = 2_000
# how the config marks an imported run, and which event files it came from
SOURCE_KEY = "imported_from"


@dataclass
class ScalarRun:
    """One folder's scalars: per tag, (step, wall time, value) in the order logged."""

    folder: Path
    name: str
    event_files: list[str]
    scalars: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)

    @property
    def points(self) -> int:
        return sum(len(points) for points in self.scalars.values())


@dataclass
class Imported:
    name: str
    run_id: int
    url: str
    points: int
    rows_refused: int
    reused: bool


def event_folders(logdir: Path) -> list[Path]:
    """Folders at or under `logdir` that hold event files, in a stable order."""
    folders = {path.parent for path in logdir.rglob(f"*{EVENT_FILE_MARK}*") if path.is_file()}
    return sorted(folders)


def run_name(logdir: Path, folder: Path) -> str:
    relative = folder.relative_to(logdir).as_posix()
    return logdir.resolve().name if relative == "." else relative


def read_scalars(logdir: Path, folder: Path) -> ScalarRun:
    """Every scalar point of the event files in `folder` (not its subfolders, which are
    runs of their own), in file order: `simple_value`s (`SummaryWriter.add_scalar`,
    TF1) and the scalar tensors TF2 and Keras write, whose plugin is named in a tag's
    first value only. TensorBoard's own loader reads the records; its compatibility
    layer is skipped, as it would convert every simple value to a tensor and back."""
    from tensorboard.backend.event_processing.event_file_loader import (
        LegacyEventFileLoader,
    )
    from tensorboard.util import tensor_util

    files = sorted(path for path in folder.iterdir() if EVENT_FILE_MARK in path.name)
    run = ScalarRun(folder, run_name(logdir, folder), [path.name for path in files])
    plugins: dict[str, str] = {}
    for path in files:
        for event in LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                kind = value.WhichOneof("value")
                if kind == "simple_value":
                    number = float(value.simple_value)
                elif kind == "tensor":
                    plugin = value.metadata.plugin_data.plugin_name
                    if plugin:
                        plugins.setdefault(value.tag, plugin)
                    if plugins.get(value.tag) != "scalars":
                        continue  # histograms, text, hparams, ... written as tensors
                    number = float(tensor_util.make_ndarray(value.tensor).item())
                else:
                    continue  # images, audio, legacy histograms
                point = (int(event.step), float(event.wall_time), number)
                run.scalars.setdefault(value.tag, []).append(point)
    return run


def rows(run: ScalarRun) -> list[tuple[int, dict[str, float], float]]:
    """One row per step: every tag's value at that step under its key, at the step's
    earliest wall time, in step order."""
    keys = KeyMapper()
    keys.prime(run.scalars)
    by_step: dict[int, tuple[dict[str, float], float]] = {}
    for tag, points in run.scalars.items():
        key = keys.key(tag)
        for step, wall_time, value in points:
            if step < 0:
                continue  # the server's steps start at 0
            metrics, first_time = by_step.setdefault(step, ({}, wall_time))
            metrics[key] = value  # a step logged twice (a restart): the later value
            if wall_time < first_time:
                by_step[step] = (metrics, wall_time)
    return [(step, *by_step[step]) for step in sorted(by_step)]


class Importer:
    def __init__(self, client: httpx.Client, config: dict[str, Any] | None = None) -> None:
        self.client = client
        self.config = dict(config or {})

    def run(self, scalars: ScalarRun) -> Imported:
        existing = self._find(scalars)
        if existing is None:
            run_id, reused = self._create(scalars), False
        else:
            run_id, reused = existing, True
        refused: list[str] = []
        uploader = Uploader(self.client, run_id, refused.append)
        batch: list[bytes] = []
        for step, metrics, wall_time in rows(scalars):
            batch.append(row_line(step, metrics, wall_time))
            if len(batch) >= BATCH_ROWS:
                uploader.post_metrics(batch)
                batch = []
        if batch:
            uploader.post_metrics(batch)
        for line in refused:
            print(f"trainlens: {scalars.name}: {line}", file=sys.stderr)
        self._finish(run_id)
        url = dashboard_url(str(self.client.base_url), run_id)
        return Imported(scalars.name, run_id, url, scalars.points, len(refused), reused)

    def _find(self, scalars: ScalarRun) -> int | None:
        """The run an earlier import of this folder created: same name, and one of the
        same event files (their names carry time, host and process, so they are unique)."""
        wanted = set(scalars.event_files)
        offset = 0
        while True:
            page = self._get(
                "/api/runs",
                params={"source": "external", "q": scalars.name, "limit": 100, "offset": offset},
            )
            for summary in page["runs"]:
                if summary["name"] != scalars.name:
                    continue
                config = self._get(f"/api/runs/{summary['id']}").get("config") or {}
                origin = config.get(SOURCE_KEY) or {}
                if origin.get("format") == "tensorboard" and wanted & set(
                    origin.get("event_files") or []
                ):
                    return int(summary["id"])
            offset += len(page["runs"])
            if not page["runs"] or offset >= page["total"]:
                return None

    def _create(self, scalars: ScalarRun) -> int:
        origin = {
            "format": "tensorboard",
            "folder": str(scalars.folder.resolve()),
            "event_files": scalars.event_files,
        }
        body = {
            "name": scalars.name,
            "source": "external",
            "config": {**self.config, SOURCE_KEY: origin},
        }
        response = self.client.post("/api/runs", json=body)
        _raise_for_status(response)
        return int(response.json()["id"])

    def _finish(self, run_id: int) -> None:
        """Completed, unless an earlier import already ended it; an import cut short
        (its run `crashed` once the data stopped) is completed by the next one."""
        detail = self._get(f"/api/runs/{run_id}")
        if detail["status"] in ("queued", "running", "stopping", "crashed"):
            _raise_for_status(self.client.post(f"/api/runs/{run_id}/finish", json={}))

    def _get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.client.get(path, params=params)
        _raise_for_status(response)
        result: dict[str, Any] = response.json()
        return result


class ImportRefused(Exception):
    """A server answer the import cannot go on from."""


def _raise_for_status(response: httpx.Response) -> None:
    if not response.is_success:
        raise ImportRefused(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {response.text[:300]}"
        )


def import_logdir(
    logdir: Path, client: httpx.Client, config: dict[str, Any] | None = None
) -> Iterator[Imported | str]:
    """Each folder's import, or the name of a folder without scalars (only hparams,
    text or histograms, e.g. the folder `add_hparams` makes), which is no run."""
    importer = Importer(client, config)
    for folder in event_folders(logdir):
        scalars = read_scalars(logdir, folder)
        yield importer.run(scalars) if scalars.points else scalars.name


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error.msg}): {text[:80]!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, not {text[:80]!r}")
    return value


def describe(imported: Imported) -> str:
    refused = f", {imported.rows_refused} rows refused" if imported.rows_refused else ""
    again = " (imported before: same run, nothing duplicated)" if imported.reused else ""
    return f"{imported.name}: {imported.points} points{refused} -> {imported.url}{again}"


def main(argv: list[str] | None = None, out: Any = None) -> int:
    """`trainlens import tensorboard LOGDIR [--url URL] [--token TOKEN] [--config JSON]`."""
    parser = argparse.ArgumentParser(
        prog="trainlens import", description="Import runs logged elsewhere into trainlens."
    )
    parser.add_argument("format", choices=["tensorboard"], help="what the logs are")
    parser.add_argument("logdir", type=Path, help="a TensorBoard log directory")
    parser.add_argument("--url", help="the trainlens server (default: TRAINLENS_URL)")
    parser.add_argument("--token", help="API token (default: TRAINLENS_TOKEN)")
    parser.add_argument(
        "--config",
        type=_json_object,
        default=None,
        help="JSON merged into every run's config, e.g. '{\"vocab_size\": 50257}' "
        "so the rules can judge the first loss against ln(vocab)",
    )
    args = parser.parse_args(argv)
    out = out or sys.stdout
    logdir: Path = args.logdir
    if not logdir.is_dir():
        parser.error(f"{logdir} is not a directory")
    if not event_folders(logdir):
        print(f"trainlens: no TensorBoard event files under {logdir}", file=sys.stderr)
        return 1
    settings = ClientSettings.resolve(url=args.url, token=args.token)
    with make_client(settings) as client:
        try:
            for imported in import_logdir(logdir, client, args.config):
                if isinstance(imported, str):
                    print(f"{imported}: no scalars, skipped", file=out)
                else:
                    print(describe(imported), file=out)
        except (httpx.TransportError, ImportRefused, Unreachable, RunRefused) as error:
            reason = getattr(error, "reason", None) or str(error)
            print(
                f"trainlens: {settings.url}: {reason}; importing again is safe "
                "(nothing is duplicated)",
                file=sys.stderr,
            )
            return 1
    return 0
