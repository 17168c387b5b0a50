"""The rule engine: runs every rule on every run, launched or external, as metrics land.

It follows the change feed through the API's event hub (`follow`), the one poller of
the `events` table: the hub hands each batch of new events to the engine, which notes
the runs that received points or changed status, and each pass evaluates those runs
incrementally, judging only the steps that arrived since their last evaluation. The
first pass catches up on every run with points. An engine without a hub (tests and
benchmarks that call `poll()` by hand, or an API with the rules switched off) reads the
feed after its own cursor instead. Rules that watch the clock (a run that stopped
logging) are also judged every few seconds on running runs. Evaluation reads in one
short transaction and writes findings in another, so ingestion never waits for the
rules, and never fails because of one.

When a step is judged: a step is judged once its rows have settled. Every step below
the run's latest is judged at once (a client logs step N+1 after it has logged all of
step N: eval rows at the top of a step, train rows after, or the other way round); the
latest step is judged once no row has reached the run for `rules_settle_seconds`, or
when the run stops running. A key whose point arrives after its step was judged anyway
(a slow client flushing its eval row late) is not lost: the engine keeps, per key, the
last step it judged, so the late point is new for that key and the rules that read the
key judge it on the next pass. So the findings depend on a run's data only, never on
how its rows were split across requests or ordered within a step.

Per run the engine remembers, in `rule_states`, the last step it judged (overall and
per key) and each rule's open episodes, so an API restart picks up where it left off.
One engine runs per database: extra API replicas set TRAINLENS_RULES_ENABLED=0.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import webhooks
from app.config import Settings
from app.db import Database
from app.events import EventKind, publish
from app.findings.service import finding_payload, run_diagnosis
from app.metrics.cache import SeriesCache
from app.metrics.store import MetricStore
from app.models import Event, Finding, Metric, RuleState, Run, RunSeries, RunSource, RunStatus
from app.models.base import now
from app.periodic import Periodic
from app.rules.base import Rule, RunView, SeriesView
from app.rules.episodes import Episode
from app.rules.registry import RULES
from app.rules.replay import evaluate
from app.rules.writer import save_episodes
from app.runs.lifecycle import transition
from app.stream.hub import EventHub, StreamEvent

log = logging.getLogger(__name__)

CURSOR = "_cursor"  # the rule_states row holding the last step judged
DIAGNOSIS = "_diagnosis"  # the rule_states row holding the diagnosis last sent
WATCHED_EVENTS = (EventKind.points.value, EventKind.status.value)
EVENT_BATCH = 10_000
# A run first seen with a long history (an import, or points written while the API was
# down) is judged this many steps per pass, so one long catch-up never holds up the
# findings of live runs; the rest follows on the next passes.
CATCH_UP_POINTS = 5_000


class RuleEngine:
    def __init__(
        self,
        db: Database,
        store: MetricStore,
        cache: SeriesCache,
        settings: Settings,
        rules: Sequence[type[Rule]] = RULES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.store = store
        self.cache = cache
        self.settings = settings
        self.rules = tuple(rules)
        self.rules_by_code = {rule.code: rule for rule in self.rules}
        self.clock = clock  # wall time, for the clock-based rules
        self.cursor: int | None = None  # last event id read, without a hub
        self._caught_up = False  # the first pass (every run with points) is done
        self._follows_hub = False
        self._heard: set[int] = set()  # runs with news from the hub, since the last pass
        self._heard_lock = threading.Lock()  # filled on the hub's thread, taken on ours
        self._last_clock = 0.0
        self._periodic = Periodic("rule-engine", self.poll, settings.rules_poll_seconds)
        self._behind: set[int] = set()  # runs with history still to judge
        self._settling: dict[int, float] = {}  # run -> when (clock) its latest step settles
        self._lock = threading.Lock()  # one pass at a time (the loop, or a test calling poll)

    # -- lifecycle -----------------------------------------------------------------

    def follow(self, hub: EventHub) -> None:
        """Learn which runs have news from the hub instead of reading the feed."""
        self._follows_hub = True
        hub.add_listener(self._hear)

    def _hear(self, events: list[StreamEvent]) -> None:
        runs = {event.run_id for event in events if event.kind in WATCHED_EVENTS}
        if runs:
            with self._heard_lock:
                self._heard |= runs

    async def start(self) -> None:
        await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    @property
    def catching_up(self) -> bool:
        """Whether some run still has history the engine has not judged."""
        return bool(self._behind)

    # -- one pass ------------------------------------------------------------------

    def poll(self) -> int:
        """Evaluate every run with news since the last pass; returns how many were."""
        with self._lock:
            with self.db.session() as session:
                runs = self._runs_with_news(session) | self._behind | self._settled_runs()
                self._behind = set()
                clock_runs: set[int] = set()
                if time.monotonic() - self._last_clock >= self.settings.rules_clock_seconds:
                    self._last_clock = time.monotonic()
                    clock_runs = set(
                        session.scalars(select(Run.id).where(Run.status == RunStatus.running))
                    )
            for run_id in sorted(runs | clock_runs):
                try:
                    self.evaluate_run(run_id, clock_only=run_id not in runs)
                except Exception:
                    log.exception("rule evaluation of run %s failed", run_id)
            return len(runs | clock_runs)

    def _settled_runs(self) -> set[int]:
        """Runs whose held-back latest step has settled by now."""
        now_ = self.clock()
        due = {run_id for run_id, at in self._settling.items() if at <= now_}
        for run_id in due:
            del self._settling[run_id]
        return due

    def _runs_with_news(self, session: Session) -> set[int]:
        with self._heard_lock:
            heard, self._heard = self._heard, set()
        if not self._caught_up:
            # First pass: catch up on every run, then follow the feed from its head. A
            # hub heard everything after its own start, which came before this pass.
            self._caught_up = True
            if not self._follows_hub:
                self.cursor = int(session.scalar(select(func.max(Event.id))) or 0)
            return heard | set(session.scalars(select(Run.id).where(Run.last_step.is_not(None))))
        if self._follows_hub:
            return heard
        rows = session.execute(
            select(Event.id, Event.run_id)
            .where(Event.id > self.cursor, Event.kind.in_(WATCHED_EVENTS))
            .order_by(Event.id)
            .limit(EVENT_BATCH)
        ).all()
        if rows:
            self.cursor = int(rows[-1][0])
        return {int(run_id) for _, run_id in rows}

    def evaluate_run(self, run_id: int, clock_only: bool = False) -> list[Finding]:
        """Judge a run's new steps (or only its clock rules); returns findings opened."""
        with self.db.session() as session:
            prepared = self._judge(session, run_id, clock_only)
        if prepared is None:
            return []
        last_step, clock_only, rules, open_episodes, changed, marks = prepared
        if clock_only and not changed:
            # The usual clock pass: nothing fired or resolved, so nothing to write (clock
            # rules resolve on their first clear observation, so no streak moved either).
            return []
        with self.db.session(write=True) as session:
            run = session.get(Run, run_id)
            if run is None:  # deleted while we judged it
                return []
            opened = save_episodes(session, run_id, changed, self.rules_by_code)
            self._save_states(
                session, run_id, rules, open_episodes, None if clock_only else (last_step, marks)
            )
            # _save_states loaded the run's rule_states rows: this lookup costs no query.
            sent = session.get(RuleState, (run_id, DIAGNOSIS))
            # Also on the first data judged: a page showing "no data yet" learns that the
            # run is healthy so far, which no finding would ever tell it.
            if changed or (not clock_only and sent is None):
                self._publish_diagnosis(session, run_id, sent)
            self._act(session, run, opened)
            payloads = [finding_payload(finding) for finding in opened]
            webhook = _webhook_url(run, self.settings)
        if webhook and payloads:
            _post_async(webhook, {"run_id": run_id, "run_name": run.name}, payloads, self.settings)
        return opened

    def _judge(
        self, session: Session, run_id: int, clock_only: bool
    ) -> (
        tuple[
            int,
            bool,
            list[type[Rule]],
            dict[str, dict[str, Episode]],
            list[Episode],
            dict[str, int],
        ]
        | None
    ):
        """Run the rules over the run's unjudged points; a clock pass that finds new ones
        judges them like any pass. Returns (last step judged, whether only the clock rules
        ran, the rules run, their open episodes, the episodes that changed, and per key
        the last step judged)."""
        run = session.get(Run, run_id)
        if run is None:
            return None
        series_rows = self.store.run_keys(session, run_id)
        if not series_rows:
            return None
        last_step = max(row.last_step for row in series_rows.values())
        states = {
            row.code: row.state
            for row in session.scalars(select(RuleState).where(RuleState.run_id == run_id))
        }
        cursor = states.get(CURSOR, {})
        since = int(cursor.get("since", -1))
        stored_marks = cursor.get("keys")
        if not isinstance(stored_marks, dict):  # a state from before per-key marks
            stored_marks = {name: min(row.last_step, since) for name, row in series_rows.items()}
        last_write_time = self._last_write_time(session, run_id)
        settled = last_step
        if run.status == RunStatus.running:
            settles_at = last_write_time + self.settings.rules_settle_seconds
            if self.clock() < settles_at:
                settled = last_step - 1  # the latest step may still get keys: wait
                self._settling[run_id] = settles_at
        fresh = any(
            min(row.last_step, settled) > int(stored_marks.get(name, -1))
            for name, row in series_rows.items()
        )
        judged_to = since
        if fresh:
            clock_only = False
            judged_to = self._judge_up_to(session, run_id, series_rows, since, settled)
        elif not clock_only:
            return None  # a rewrite of steps already judged (a resume), or an unsettled step
        marks = {
            name: max(int(stored_marks.get(name, -1)), min(row.last_step, judged_to))
            for name, row in series_rows.items()
        }
        rules = [rule for rule in self.rules if rule.time_based or not clock_only]
        key_ids = {name: row.key_id for name, row in series_rows.items()}

        def load(names: list[str]) -> dict[str, SeriesView]:
            wanted = {key_ids[name]: name for name in names if name in key_ids}
            loaded = self.cache.get_many(session, run_id, wanted)
            return {
                wanted[key_id]: SeriesView(series.steps, series.values, series.times)
                for key_id, series in loaded.items()
            }

        view = RunView(
            run_id=run_id,
            status=run.status,
            config=run.config or {},
            loader=load,
            key_names=key_ids,
            since=since,
            last_step=judged_to,
            now=self.clock(),
            last_write_time=last_write_time,
            key_since={name: int(mark) for name, mark in stored_marks.items()},
            source=str(run.source),
            heartbeat_time=run.heartbeat_at,
            status_since=session.scalar(
                select(func.max(Event.created_at)).where(
                    Event.run_id == run_id, Event.kind == EventKind.status.value
                )
            ),
        )
        open_episodes = {
            code: {subject: Episode.from_state(state) for subject, state in stored.items()}
            for code, stored in ((rule.code, states.get(rule.code, {})) for rule in rules)
        }
        changed = evaluate(rules, view, open_episodes, self.settings.rules)
        return max(judged_to, since), clock_only, rules, open_episodes, changed, marks

    def _judge_up_to(
        self,
        session: Session,
        run_id: int,
        series_rows: dict[str, RunSeries],
        since: int,
        last_step: int,
    ) -> int:
        """The last step this pass judges: `last_step` (the latest settled step), or on a
        long backlog the step
        CATCH_UP_POINTS points on (counted on the run's loss, else its longest key)."""
        pace = series_rows.get("train/loss") or max(
            series_rows.values(), key=lambda row: row.last_step - row.first_step
        )
        if last_step - max(since, pace.first_step - 1) <= CATCH_UP_POINTS:
            return last_step
        chunk_end = session.scalar(
            select(Metric.step)
            .where(Metric.run_id == run_id, Metric.key_id == pace.key_id, Metric.step > since)
            .order_by(Metric.step)
            .offset(CATCH_UP_POINTS - 1)
            .limit(1)
        )
        if chunk_end is None or chunk_end >= last_step:
            return last_step
        self._behind.add(run_id)
        return int(chunk_end)

    def _last_write_time(self, session: Session, run_id: int) -> float:
        """When the run's latest points reached the database, by the server's clock (a
        script's own `time` values may be anything). Past event retention the feed has
        forgotten, and the write is at least that old."""
        written = session.scalar(
            select(func.max(Event.created_at)).where(
                Event.run_id == run_id, Event.kind == EventKind.points.value
            )
        )
        if written is None:
            return self.clock() - self.settings.event_retention_seconds
        return float(written)

    def _save_states(
        self,
        session: Session,
        run_id: int,
        rules: Sequence[type[Rule]],
        open_episodes: dict[str, dict[str, Episode]],
        judged_up_to: tuple[int, dict[str, int]] | None,
    ) -> None:
        rows = {
            row.code: row
            for row in session.scalars(select(RuleState).where(RuleState.run_id == run_id))
        }
        wanted: dict[str, dict[str, Any]] = {
            rule.code: {
                subject: episode.to_state()
                for subject, episode in open_episodes.get(rule.code, {}).items()
            }
            for rule in rules
        }
        if judged_up_to is not None:
            wanted[CURSOR] = {"since": judged_up_to[0], "keys": judged_up_to[1]}
        for code, state in wanted.items():
            row = rows.get(code)
            if row is None:
                if state:
                    session.add(RuleState(run_id=run_id, code=code, state=state, updated_at=now()))
            elif row.state != state:
                row.state = state
                row.updated_at = now()

    def _publish_diagnosis(self, session: Session, run_id: int, row: RuleState | None) -> None:
        """Send the run's diagnosis on its stream when it differs from the last one sent
        (`row`: the rule_states row holding that one, if any)."""
        document = run_diagnosis(session, self.store, run_id)
        if row is not None and row.state.get("document") == document:
            return
        publish(session, run_id, EventKind.diagnosis, document)
        if row is None:
            session.add(
                RuleState(
                    run_id=run_id, code=DIAGNOSIS, state={"document": document}, updated_at=now()
                )
            )
        else:
            row.state = {"document": document}
            row.updated_at = now()

    def _act(self, session: Session, run: Run, opened: list[Finding]) -> None:
        """The per-run policy: a non-finite loss stops a launched run (the trainer keeps
        its last good checkpoint). The trainer usually got there first; this covers a
        trainer that logged the NaN but did not stop."""
        if run.source != RunSource.launched or run.status != RunStatus.running:
            return
        actions = (run.config or {}).get("actions") or {}
        if not actions.get("stop_on_nonfinite", True):
            return
        if any(finding.code == "nonfinite" for finding in opened):
            transition(session, run, RunStatus.stopping, "stopped by the rule engine: non-finite")


def _webhook_url(run: Run, settings: Settings) -> str | None:
    actions = (run.config or {}).get("actions") or {}
    url = actions.get("webhook_url") if isinstance(actions, dict) else None
    return url or settings.rules_webhook_url


def _post_async(
    url: str, run: dict[str, Any], findings: list[dict[str, Any]], settings: Settings
) -> None:
    """POST each new finding to the webhook off the engine's thread: a slow or broken
    receiver must not delay diagnostics. app.webhooks refuses destinations outside the
    allowlist or on private addresses (checked again at every send)."""

    def send() -> None:
        for finding in findings:
            try:
                webhooks.send(url, {**run, "finding": finding}, settings)
            except (httpx.HTTPError, webhooks.WebhookRefused) as exc:
                log.warning("webhook not sent: %s", exc)

    threading.Thread(target=send, name="finding-webhook", daemon=True).start()
