"""`trainlens sync PATH`: upload run folders left by offline runs, by runs whose server
was away, or by scripts that were killed.

Idempotent: the folder records which server run it became (per server URL) before
anything is uploaded, so a second sync reuses that run, and the server stores each
(run, key, step) once however often it is sent. Samples are counted as they are
uploaded, so they are not sent twice either.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import httpx

from trainlens.client import dashboard_url, make_client
from trainlens.journal import METRICS, SAMPLES, Journal, run_folders
from trainlens.settings import ClientSettings
from trainlens.uploader import RunRefused, Unreachable, Uploader, describe_error, response_detail

CHUNK_ROWS = 2_000
UNFINISHED_ERROR = "the script ended without finishing the run; uploaded from its journal"


class SyncError(Exception):
    pass


def sync_folder(folder: Path, settings: ClientSettings, say: object = print) -> int:
    """Upload one run folder; returns the server's run id."""
    journal = Journal.open(folder)
    with make_client(settings) as client:
        run_id = _server_run(client, journal, settings.url)
        problems: list[str] = []
        uploader = Uploader(client, run_id, problems.append)
        try:
            for chunk in journal.iter_chunks(METRICS, CHUNK_ROWS):
                uploader.post_metrics(chunk)
            _upload_samples(journal, uploader, settings.url)
        except (Unreachable, RunRefused) as error:
            reason = f"{settings.url}: {error.reason}; nothing is lost, sync again"
            raise SyncError(reason) from None
        for problem in problems:
            print(f"trainlens: {folder.name}: {problem}", file=sys.stderr)
        _finish(client, journal, run_id)
    assert callable(say)
    say(
        f"{folder}: {uploader.rows_sent} rows synced"
        + (f", {uploader.rows_refused} refused" if uploader.rows_refused else "")
        + f" -> {dashboard_url(settings.url, run_id)}"
    )
    return run_id


def _server_run(client: httpx.Client, journal: Journal, url: str) -> int:
    """The run this folder already became on this server, else a new one (recorded in
    the folder before any row is sent, so an interrupted sync resumes into it)."""
    runs = dict(journal.meta.get("runs") or {})
    known = runs.get(url)
    if known is not None:
        response = _request(client, "GET", f"/api/runs/{known['id']}")
        # The creation time tells our run from a later one that got a deleted run's id.
        if response.is_success and response.json().get("created_at") == known["created_at"]:
            return int(known["id"])
        if not response.is_success and response.status_code != 404:
            raise SyncError(f"{url}: run {known['id']}: HTTP {response.status_code}")
    body = {
        "name": journal.meta.get("name"),
        "source": "external",
        "config": journal.meta.get("config") or {},
    }
    response = _request(client, "POST", "/api/runs", json=body)
    if not response.is_success:
        detail = response_detail(response)
        raise SyncError(f"{url} refused the run ({response.status_code}): {detail}")
    created = response.json()
    run_id = int(created["id"])
    runs[url] = {"id": run_id, "created_at": created["created_at"]}
    journal.update_meta(runs=runs)
    return run_id


def _upload_samples(journal: Journal, uploader: Uploader, url: str) -> None:
    counts = dict(journal.meta.get("samples_synced") or {})
    done = int(counts.get(url, 0))
    lines, _ = journal.read_lines(SAMPLES)
    for line in lines[done:]:
        uploader.post_sample(line)
        done += 1
        counts[url] = done
        journal.update_meta(samples_synced=counts)


def _finish(client: httpx.Client, journal: Journal, run_id: int) -> None:
    ending = journal.meta.get("finish")
    if ending is None:
        # Killed, or still running elsewhere: say so unless the server already knows.
        current = _request(client, "GET", f"/api/runs/{run_id}").json().get("status")
        if current != "running":
            return
        ending = {"status": "crashed", "error": UNFINISHED_ERROR}
    response = _request(client, "POST", f"/api/runs/{run_id}/finish", json=ending)
    if not response.is_success and response.status_code != 409:  # 409: ended already
        detail = response_detail(response)
        raise SyncError(f"finishing run {run_id}: HTTP {response.status_code}: {detail}")


def _request(client: httpx.Client, method: str, path: str, **kwargs: object) -> httpx.Response:
    try:
        return client.request(method, path, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as error:
        raise SyncError(f"{client.base_url}: {describe_error(error)}") from None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="trainlens sync", description="Upload offline or unsent runs to a trainlens server."
    )
    parser.add_argument(
        "path", type=Path, help="a run folder, or a folder of them (./trainlens-runs)"
    )
    parser.add_argument(
        "--url", help="the server (default TRAINLENS_URL, else http://127.0.0.1:8000)"
    )
    parser.add_argument("--token", help="bearer token (default TRAINLENS_TOKEN)")
    args = parser.parse_args(argv)
    settings = ClientSettings.resolve(url=args.url, token=args.token)
    try:
        folders = run_folders(args.path)
    except FileNotFoundError as error:
        print(f"trainlens sync: {error}", file=sys.stderr)
        return 2
    if not folders:
        print(f"trainlens sync: no run folders in {args.path}", file=sys.stderr)
        return 2
    failed = 0
    for folder in folders:
        try:
            sync_folder(folder, settings)
        except (SyncError, OSError, ValueError) as error:
            print(f"trainlens sync: {folder}: {error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0
