"""Posting journal-shaped lines to a run, one policy for the live client and for
`trainlens sync`:

- 2xx: done.
- a network error, 408/425/429 or a 5xx: `Unreachable`, carrying every line not yet
  confirmed; the caller keeps them (memory or journal) and tries again later. Ingest is
  an idempotent upsert, so a line sent twice is stored once.
- 401/403/404/410: `RunRefused`: the run cannot take data at all (token, deleted run);
  splitting would only repeat the answer.
- any other 4xx: never retried as a whole. The batch is split in halves until the
  offending rows stand alone; good rows land, each bad one is reported once.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx

RETRYABLE_STATUSES = frozenset({408, 425, 429})
RUN_LEVEL_STATUSES = frozenset({401, 403, 404, 410})


class Unreachable(Exception):
    def __init__(self, reason: str, unsent: list[bytes]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unsent = unsent


class RunRefused(Exception):
    def __init__(self, reason: str, unsent: list[bytes]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unsent = unsent


def describe_error(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def response_detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    text = detail if isinstance(detail, str) else json.dumps(detail)
    return text[:300]


class Uploader:
    def __init__(self, client: httpx.Client, run_id: int, report: Callable[[str], None]) -> None:
        self.client = client
        self.run_id = run_id
        self.report = report  # called once per refused row or sample
        self.rows_sent = 0
        self.rows_refused = 0

    def post_metrics(self, lines: list[bytes], timeout: float | None = None) -> None:
        # A stack of contiguous chunks, first chunk last: splitting keeps the order.
        pending = [lines]
        while pending:
            chunk = pending.pop()
            body = b'{"rows":[' + b",".join(line.rstrip(b"\n") for line in chunk) + b"]}"
            response = self._post(f"/api/runs/{self.run_id}/metrics", body, timeout, chunk, pending)
            if response.is_success:
                self.rows_sent += len(chunk)
            elif len(chunk) > 1:
                middle = len(chunk) // 2
                pending += [chunk[middle:], chunk[:middle]]
            else:
                self.rows_refused += 1
                self.report(
                    f"row {_describe_row(chunk[0])} refused by the server "
                    f"({response.status_code}): {response_detail(response)}"
                )

    def post_sample(self, line: bytes, timeout: float | None = None) -> None:
        response = self._post(f"/api/runs/{self.run_id}/samples", line, timeout, [line], [])
        if not response.is_success:
            self.report(
                f"sample {_describe_row(line)} refused by the server "
                f"({response.status_code}): {response_detail(response)}"
            )

    def _post(
        self,
        path: str,
        body: bytes,
        timeout: float | None,
        chunk: list[bytes],
        pending: list[list[bytes]],
    ) -> httpx.Response:
        def unsent() -> list[bytes]:
            return chunk + [line for rest in reversed(pending) for line in rest]

        try:
            response = self.client.post(
                path,
                content=body,
                headers={"content-type": "application/json"},
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as error:
            raise Unreachable(describe_error(error), unsent()) from None
        status = response.status_code
        if status >= 500 or status in RETRYABLE_STATUSES:
            raise Unreachable(f"HTTP {status}: {response_detail(response)[:100]}", unsent())
        if status in RUN_LEVEL_STATUSES:
            raise RunRefused(f"HTTP {status}: {response_detail(response)}", unsent())
        return response


def _describe_row(line: bytes) -> str:
    try:
        record = json.loads(line)
        return f"at step {record.get('step')}"
    except (ValueError, AttributeError):
        return repr(line[:60])
