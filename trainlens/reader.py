"""Reading a run back at full resolution: `trainlens.history(run_id, ...)` and
`run.history(...)`, paging through `GET /api/runs/{id}/history` until the last page
(W&B's `scan_history`, as columns).

Every logged point comes back as it was stored: NaN and ±Inf as floats (decoded by
`trainlens.wire`), a step where a key has no point as None. Standard library + httpx.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from trainlens.client import make_client
from trainlens.settings import ClientSettings
from trainlens.uploader import response_detail
from trainlens.wire import check_step, decode_float

# The server's most steps per page.
MAX_PAGE_SIZE = 100_000


@dataclass
class History:
    """Columns of a run: `steps[i]` is the step of row i, `wall_times[i]` the latest wall
    time among its points and `columns[key][i]` the key's value there (None: no point).
    `pandas.DataFrame(h.columns, index=h.steps)` makes a frame of it."""

    steps: list[int] = field(default_factory=list)
    wall_times: list[float] = field(default_factory=list)
    columns: dict[str, list[float | None]] = field(default_factory=dict)

    def __getitem__(self, key: str) -> list[float | None]:
        return self.columns[key]

    def __len__(self) -> int:
        return len(self.steps)


def history(
    run_id: int,
    keys: list[str] | str | None = None,
    start: int | None = None,
    end: int | None = None,
    *,
    url: str | None = None,
    token: str | None = None,
    page_size: int = 10_000,
) -> History:
    """Every point of run `run_id` from `start` to `end` (both inclusive; default all),
    for `keys` (default every key of the run), one row per step where any of them has a
    point. The server is `url=` or TRAINLENS_URL, the token `token=` or TRAINLENS_TOKEN.

    A key the run does not have raises KeyError; an unknown run LookupError; a refused
    token PermissionError."""
    with make_client(ClientSettings.resolve(url=url, token=token)) as client:
        return read_history(client, run_id, keys, start, end, page_size)


def read_history(
    client: httpx.Client,
    run_id: int,
    keys: list[str] | str | None,
    start: int | None,
    end: int | None,
    page_size: int,
) -> History:
    names = [keys] if isinstance(keys, str) else None if keys is None else list(keys)
    if names is not None and not names:
        raise ValueError("keys names no metric (None reads every key)")
    if type(page_size) is not int or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be an integer from 1 to {MAX_PAGE_SIZE}")
    first = 0 if start is None else check_step(start)
    params: dict[str, Any] = {"limit": page_size, "start": first}
    if end is not None:
        params["end"] = check_step(end)
    if names is not None:
        params["keys"] = ",".join(names)
    result = History()
    next_start: int | None = first
    while next_start is not None:
        params["start"] = next_start
        page = _get(client, f"/api/runs/{run_id}/history", params)
        if names is None:
            names = list(page["keys"])
        else:
            missing = [name for name in names if name not in page["keys"]]
            if missing:
                raise KeyError(f"run {run_id} has no metric {', '.join(map(repr, missing))}")
        rows = len(page["steps"])
        result.steps += page["steps"]
        result.wall_times += page["wall_times"]
        for name in names:
            cells = page["columns"].get(name, [None] * rows)
            result.columns.setdefault(name, []).extend(
                cell if cell is None or type(cell) is float else decode_float(cell)
                for cell in cells
            )
        next_start = page["next_start"]
    for name in names or []:
        result.columns.setdefault(name, [])
    return result


def _get(client: httpx.Client, path: str, params: dict[str, Any]) -> dict[str, Any]:
    response = client.get(path, params=params)
    if response.is_success:
        page: dict[str, Any] = response.json()
        return page
    detail = response_detail(response)
    if response.status_code in (401, 403):
        raise PermissionError(f"trainlens: {client.base_url} refused the token: {detail}")
    if response.status_code == 404:
        raise LookupError(f"trainlens: {detail}")
    status = response.status_code
    raise ValueError(f"trainlens: the server refused the request ({status}): {detail}")
