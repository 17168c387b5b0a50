"""Creating, listing and steering runs."""

from __future__ import annotations

import shutil
from collections import defaultdict
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import webhooks
from app.config import Settings
from app.errors import conflict, from_validation_error, invalid, invalid_fields, not_found
from app.estimate.service import refuse_if_too_big
from app.events import EventKind, publish
from app.jsonutil import encode_float
from app.metrics.cache import SeriesCache
from app.metrics.store import NONFINITE_VALUES, MetricStore
from app.models import (
    ACTIVE_STATUSES,
    RESUMABLE_STATUSES,
    Dataset,
    Finding,
    MetricKey,
    NonFinite,
    Run,
    RunSeries,
    RunSource,
    RunStatus,
)
from app.models.base import now
from app.rules.limits import override_errors
from app.rules.registry import RULES_BY_CODE
from app.runs import files
from app.runs.failure import error_line, resume_blocked
from app.runs.lifecycle import transition
from app.runs.query import (
    RUN_FIELDS,
    RunListSpec,
    config_value,
    flat_config_keys,
    is_metric,
    order_value,
)
from app.runs.schemas import (
    FindingCounts,
    LatestPoint,
    RunColumns,
    RunCreate,
    RunDetail,
    RunSummary,
    RunUpdate,
)
from app.stream.hub import SUMMARY_KEYS
from app.strict import document_problems
from trainer.config import TrainConfig
from trainer.corpus import BUILTIN_DATASET
from trainer.presets import PRESETS, preset_config


def get_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise not_found("run", run_id)
    return run


# -- create ----------------------------------------------------------------------------


def validate_train_config(
    session: Session, preset: str | None, overrides: dict[str, Any]
) -> TrainConfig:
    if preset is not None and preset not in PRESETS:
        raise invalid("preset", f"unknown preset {preset!r}; one of {', '.join(sorted(PRESETS))}")
    try:
        config = preset_config(preset, overrides) if preset else TrainConfig(**overrides)
    except ValidationError as error:
        raise from_validation_error(error, ("config",)) from None
    except TypeError as error:
        raise invalid("config", str(error)) from None
    if config.dataset != BUILTIN_DATASET:
        exists = session.scalar(select(Dataset.id).where(Dataset.name == config.dataset))
        if exists is None:
            raise invalid(
                "config.dataset",
                f"no dataset named {config.dataset!r}: upload it with POST /api/datasets, "
                f"or use the built-in {BUILTIN_DATASET!r}",
            )
    return config


def check_rule_overrides(config: dict[str, Any]) -> None:
    """`config.rules` tunes the rule engine per run: every code and threshold must exist."""
    errors = override_errors(RULES_BY_CODE, config.get("rules"))
    if errors:
        raise invalid_fields(errors)


def check_webhook(config: dict[str, Any], settings: Settings) -> None:
    """A run may name a webhook only within the operator's allowlist (app.webhooks)."""
    actions = config.get("actions")
    url = actions.get("webhook_url") if isinstance(actions, dict) else None
    if url is None:
        return
    if not isinstance(url, str):
        raise invalid("config.actions.webhook_url", "must be a URL")
    try:
        webhooks.check_destination(url, settings)
    except webhooks.WebhookRefused as error:
        raise invalid("config.actions.webhook_url", str(error)) from None


def create_run(session: Session, settings: Settings, body: RunCreate) -> Run:
    problems = document_problems(body.config, "config")
    if problems:
        raise invalid_fields(problems)
    check_rule_overrides(body.config)
    check_webhook(body.config, settings)
    if body.source == RunSource.external:
        if body.preset is not None:
            raise invalid("preset", "presets apply to launched runs only")
        run = Run(
            name=body.name or "",
            source=RunSource.external.value,
            status=RunStatus.running.value,
            config=body.config,
        )
    else:
        config = validate_train_config(session, body.preset, body.config)
        refuse_if_too_big(config, settings)
        run = Run(
            name=body.name or "",
            source=RunSource.launched.value,
            status=RunStatus.queued.value,
            preset=body.preset,
            config=config.model_dump(mode="json"),
        )
    session.add(run)
    session.flush()
    run.name = run.name or default_name(run)
    publish(session, run.id, EventKind.created, {"name": run.name, "source": run.source})
    transition(session, run, RunStatus(run.status))
    return run


def default_name(run: Run) -> str:
    """Two runs of one preset read apart in the table: preset, id and the model's shape."""
    config = run.config or {}
    if run.source == RunSource.external:
        return f"external-{run.id}"
    shape = [
        f"{config['n_layer']}L" if "n_layer" in config else None,
        f"{config['n_embd']}d" if "n_embd" in config else None,
        f"lr {config['lr']:g}" if isinstance(config.get("lr"), (int, float)) else None,
    ]
    summary = "·".join(part for part in shape if part)
    return f"{run.preset or 'custom'}-{run.id}" + (f" ({summary})" if summary else "")


def update_run(session: Session, run: Run, body: RunUpdate) -> Run:
    if body.name is not None:
        run.name = body.name.strip() or run.name
    if body.tags is not None:
        run.tags = sorted({tag.strip() for tag in body.tags if tag.strip()})
    if body.notes is not None:
        run.notes = body.notes
    publish(
        session, run.id, EventKind.updated, {"name": run.name, "tags": run.tags, "notes": run.notes}
    )
    return run


# -- read ------------------------------------------------------------------------------


def list_runs(
    session: Session,
    settings: Settings,
    spec: RunListSpec,
    limit: int,
    offset: int,
) -> tuple[list[RunSummary], int]:
    query = select(Run)
    if spec.statuses:
        query = query.where(Run.status.in_([status.value for status in spec.statuses]))
    if spec.source is not None:
        query = query.where(Run.source == spec.source.value)
    if spec.name_contains:
        query = query.where(Run.name.contains(spec.name_contains, autoescape=True))
    query = query.order_by(Run.created_at.desc(), Run.id.desc())
    metric_names = {*SUMMARY_KEYS, *spec.metric_columns}
    if not spec.needs_values():
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        runs = list(session.scalars(query.limit(limit).offset(offset)).all())
        latest = _latest_points(session, [run.id for run in runs], tuple(metric_names))
    else:
        # Filters and sorts on config keys and latest values: judged here over every
        # candidate (a dashboard's runs number in the hundreds or thousands).
        runs = list(session.scalars(query).all())
        metric_names |= {c.name for c in spec.conditions if is_metric(c.name)}
        if spec.sort and is_metric(spec.sort[0]):
            metric_names.add(spec.sort[0])
        latest = _latest_points(session, [run.id for run in runs], tuple(metric_names))
        runs = [
            run
            for run in runs
            if all(c.matches(_value(run, latest.get(run.id, {}), c.name)) for c in spec.conditions)
        ]
        if spec.sort:
            name, descending = spec.sort
            ordered = [
                (order_value(_value(run, latest.get(run.id, {}), name)), run) for run in runs
            ]
            present = [(value, run) for value, run in ordered if value is not None]
            present.sort(key=lambda pair: pair[0], reverse=descending)
            runs = [run for _, run in present] + [run for value, run in ordered if value is None]
        total = len(runs)
        runs = runs[offset : offset + limit]
    ids = [run.id for run in runs]
    shown = {*SUMMARY_KEYS, *spec.metric_columns}
    counts = _finding_counts(session, ids)
    positions = _queue_positions(session, runs)
    summaries = [
        _summary(
            run,
            {k: v for k, v in latest.get(run.id, {}).items() if k in shown},
            counts.get(run.id, FindingCounts()),
            positions.get(run.id),
            _phase(settings, run),
        )
        for run in runs
    ]
    return summaries, total


def _value(run: Run, latest: dict[str, LatestPoint], name: str) -> Any:
    if is_metric(name):
        point = latest.get(name)
        return None if point is None else point.value
    if name == "step":
        return run.last_step
    if name in RUN_FIELDS:
        return getattr(run, name)
    return config_value(run.config or {}, name)


def run_columns(session: Session) -> RunColumns:
    config_keys: set[str] = set()
    tags: set[str] = set()
    presets: set[str] = set()
    for config, run_tags, preset in session.execute(select(Run.config, Run.tags, Run.preset)):
        config_keys.update(flat_config_keys(config or {}))
        tags.update(run_tags or [])
        if preset:
            presets.add(preset)
    metrics = session.scalars(
        select(MetricKey.name)
        .where(select(RunSeries.key_id).where(RunSeries.key_id == MetricKey.id).exists())
        .order_by(MetricKey.name)
    ).all()
    return RunColumns(
        fields=list(RUN_FIELDS),
        config=sorted(config_keys),
        metrics=list(metrics),
        tags=sorted(tags),
        presets=sorted(presets),
    )


def _queue_positions(session: Session, runs: list[Run]) -> dict[int, int]:
    """Place in the worker's claim order (oldest created first) of each queued run."""
    if not any(run.status == RunStatus.queued and run.source == RunSource.launched for run in runs):
        return {}
    queued = session.execute(
        select(Run.id)
        .where(Run.status == RunStatus.queued.value, Run.source == RunSource.launched.value)
        .order_by(Run.created_at, Run.id)
    ).scalars()
    return {run_id: position for position, run_id in enumerate(queued, start=1)}


def _phase(settings: Settings, run: Run) -> str | None:
    if run.source != RunSource.launched:
        return None
    if run.status == RunStatus.queued:
        return "waiting for a worker"
    if run.status == RunStatus.running and run.last_step is None:
        return files.phase(settings, run.id) or "starting: the worker is launching the trainer"
    return None


def run_detail(session: Session, settings: Settings, store: MetricStore, run: Run) -> RunDetail:
    keys = store.run_keys(session, run.id)
    latest = {name: _latest(row) for name, row in keys.items()}
    counts = _finding_counts(session, [run.id]).get(run.id, FindingCounts())
    position = _queue_positions(session, [run]).get(run.id)
    summary = _summary(run, latest, counts, position, _phase(settings, run))
    return RunDetail(**summary.model_dump(), keys=sorted(keys))


def _summary(
    run: Run,
    latest: dict[str, LatestPoint],
    counts: FindingCounts,
    queue_position: int | None = None,
    phase: str | None = None,
) -> RunSummary:
    config = run.config or {}
    tokens_per_step = None
    if run.source == RunSource.launched:
        tokens_per_step = (
            config.get("batch_size", 0)
            * config.get("block_size", 0)
            * config.get("grad_accum_steps", 1)
            * config.get("nproc", 1)
        ) or None
    max_steps = config.get("max_steps")
    return RunSummary(
        id=run.id,
        name=run.name,
        source=run.source,
        status=RunStatus(run.status),
        preset=run.preset,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        heartbeat_at=run.heartbeat_at,
        last_step=run.last_step,
        max_steps=max_steps if isinstance(max_steps, int) else None,
        tokens_per_step=tokens_per_step,
        attempt=run.attempt,
        error=run.error,
        error_line=error_line(run.error),
        resume_blocked=resume_blocked(run),
        queue_position=queue_position,
        phase=phase,
        tags=list(run.tags or []),
        notes=run.notes or "",
        config=config,
        latest=latest,
        findings=counts,
    )


def _latest(row: RunSeries) -> LatestPoint:
    value = (
        row.last_value
        if row.last_nonfinite == 0
        else NONFINITE_VALUES[NonFinite(row.last_nonfinite)]
    )
    return LatestPoint(
        step=row.last_step, value=encode_float(float(value or 0.0)), time=row.last_time
    )


def _latest_points(
    session: Session, run_ids: list[int], names: tuple[str, ...]
) -> dict[int, dict[str, LatestPoint]]:
    if not run_ids:
        return {}
    rows = session.execute(
        select(RunSeries, MetricKey.name)
        .join(MetricKey, MetricKey.id == RunSeries.key_id)
        .where(RunSeries.run_id.in_(run_ids), MetricKey.name.in_(names))
    ).all()
    latest: dict[int, dict[str, LatestPoint]] = defaultdict(dict)
    for row, name in rows:
        latest[row.run_id][name] = _latest(row)
    return latest


def _finding_counts(session: Session, run_ids: list[int]) -> dict[int, FindingCounts]:
    if not run_ids:
        return {}
    rows = session.execute(
        select(Finding.run_id, Finding.severity, Finding.state, func.count())
        .where(Finding.run_id.in_(run_ids))
        .group_by(Finding.run_id, Finding.severity, Finding.state)
    ).all()
    counts: dict[int, FindingCounts] = defaultdict(FindingCounts)
    for run_id, severity, state, count in rows:
        entry = counts[run_id]
        if severity in ("info", "warning", "critical"):
            setattr(entry, severity, getattr(entry, severity) + count)
        if state == "firing":
            entry.firing += count
    return counts


# -- steer -----------------------------------------------------------------------------


def stop_run(session: Session, run: Run) -> Run:
    status = RunStatus(run.status)
    if status == RunStatus.queued:
        transition(session, run, RunStatus.stopped)
    elif status == RunStatus.running and run.source == RunSource.external:
        # A script cannot be signalled; it learns from the run's status if it asks.
        transition(session, run, RunStatus.stopped)
    elif status == RunStatus.running:
        # The worker sees this, asks the trainer to finish its step and checkpoint.
        transition(session, run, RunStatus.stopping)
    else:
        raise conflict(f"run {run.id} is {status.value}: only a queued or running run can stop")
    return run


def resume_run(session: Session, settings: Settings, run: Run) -> Run:
    if run.source == RunSource.external:
        raise conflict(f"run {run.id} is fed by a script: resume it from the script")
    status = RunStatus(run.status)
    if status not in RESUMABLE_STATUSES:
        allowed = ", ".join(s.value for s in RESUMABLE_STATUSES)
        raise conflict(f"run {run.id} is {status.value}: only a {allowed} run can resume")
    blocked = resume_blocked(run)
    if blocked is not None:
        raise conflict(f"run {run.id} cannot resume ({error_line(run.error)}): {blocked}")
    try:
        config = TrainConfig(**run.config)
    except ValidationError as error:
        raise from_validation_error(error, ("config",)) from None
    refuse_if_too_big(config, settings)
    run.attempt += 1
    transition(session, run, RunStatus.queued)
    return run


def finish_run(session: Session, run: Run, status: RunStatus, error: str | None) -> Run:
    if run.source != RunSource.external:
        raise conflict(f"run {run.id} is launched: its worker reports how it ended")
    if RunStatus(run.status) not in ACTIVE_STATUSES:
        raise conflict(f"run {run.id} has already ended ({run.status})")
    transition(session, run, status, error)
    return run


def heartbeat(session: Session, run: Run) -> Run:
    if RunStatus(run.status) != RunStatus.running:
        raise conflict(f"run {run.id} is {run.status}, not running")
    run.heartbeat_at = now()
    return run


def delete_run(session: Session, settings: Settings, cache: SeriesCache, run: Run) -> None:
    """Delete the run with its metrics, findings and samples (foreign keys cascade).
    A worker training it notices the run is gone and ends the child process."""
    run_id = run.id
    session.delete(run)
    publish(session, run_id, EventKind.deleted, {})
    session.flush()
    cache.drop_run(run_id)
    shutil.rmtree(settings.runs_dir / str(run_id), ignore_errors=True)
