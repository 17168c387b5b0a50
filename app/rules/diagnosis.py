"""Diagnoses above symptoms: the run's findings grouped by the cause they share.

A bad run raises many findings (a divergence, repeated spikes, clipping on every step,
saturated layers); they are symptoms of one cause, and the cause is what the user must
fix. `diagnose` groups a run's findings into diagnoses, each with a stable `cause` code,
a summary built from the run's own numbers and config, a fix, and its symptoms, the root
causes first (by severity, then by the step they began). It is pure: the findings
service reads the inputs, the engine publishes the result when it changes.

The grouping is a small decision list, in this order:
- the learning rate is too high when the run shows what a too-high LR does (a divergence,
  clipping on most steps while the loss rises, or three spikes or more); saturated or
  growing layers, oversized updates, dead units and a non-finite loss join it. When the
  config has no warmup and those symptoms were early and recovered, the cause is the
  missing warmup instead (a sustained divergence needs a lower LR, not only a warmup);
- a learning rate too low when the loss plateaued with the LR named as its cause;
- otherwise each remaining symptom is its own diagnosis (a bad batch, a one-off NaN, an
  overfit, an initial loss far from ln V, a leak, a stall, ...).
Config checks (`stability`) join the diagnosis of the symptom they explain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.models import Finding
from app.rules.base import SEVERITY_RANK

LR_SYMPTOMS = (
    "divergence",
    "loss_spike",
    "grad_norm_spike",
    "clip_saturation",
    "activation_saturation",
    "activation_scale",
    "update_ratio",
    "dead_units",
    "nonfinite",
    "lr_schedule",
)
ADAM_USUAL_MAX_LR = 1e-3  # above it, small GPTs trained with Adam rarely stay stable
EARLY_STEPS = 200  # symptoms that begin before this step may be the missing warmup's


@dataclass
class RunFacts:
    """What the diagnosis reads besides the findings."""

    config: Mapping[str, Any]
    source: str = "external"
    has_data: bool = True
    vocab_size: float | None = None
    layer_counts: Mapping[str, int] = field(default_factory=dict)  # stat -> layers logged


@dataclass
class _Group:
    cause: str
    findings: list[Finding]
    title: str = ""
    summary: str = ""
    fix: str = ""


def diagnose(run_id: int, facts: RunFacts, findings: Sequence[Finding]) -> dict[str, Any]:
    """The diagnosis document of `GET /api/runs/{id}/diagnosis` and of the SSE event."""
    groups = _group(facts, list(findings))
    diagnoses = [_document(group) for group in groups]
    diagnoses.sort(
        key=lambda d: (
            -SEVERITY_RANK[d["severity"]],
            d["first_step"] if d["first_step"] is not None else math.inf,
        )
    )
    if not facts.has_data and not findings:
        state = "no_data"
    elif any(d["severity"] != "info" for d in diagnoses):
        state = "problems"
    else:
        state = "healthy"
    return {"run_id": run_id, "state": state, "diagnoses": diagnoses}


# -- grouping ------------------------------------------------------------------------


def _group(facts: RunFacts, findings: list[Finding]) -> list[_Group]:
    by_code: dict[str, list[Finding]] = {}
    for finding in findings:
        by_code.setdefault(finding.code, []).append(finding)
    taken: set[int] = set()
    groups: list[_Group] = []

    def take(cause: str, members: list[Finding]) -> _Group:
        group = _Group(cause, members)
        taken.update(f.id for f in members)
        groups.append(group)
        return group

    stability = by_code.get("stability", [])
    spikes = by_code.get("loss_spike", []) + by_code.get("grad_norm_spike", [])
    clip_lr = [
        f for f in by_code.get("clip_saturation", []) if f.evidence.get("cause") == "lr_too_high"
    ]
    warmup_lr = [f for f in by_code.get("lr_schedule", []) if _subject(f) == "warmup"]
    lr_evidence = bool(by_code.get("divergence") or clip_lr or warmup_lr or len(spikes) >= 3)
    if lr_evidence:
        members = [
            f
            for code in LR_SYMPTOMS
            for f in by_code.get(code, [])
            if not (code == "clip_saturation" and f not in clip_lr)
            and not (code == "update_ratio" and _too_small(f))
            and not (code == "lr_schedule" and f not in warmup_lr)
            and not (code == "activation_scale" and _collapsed(f))
        ]
        missing_warmup = [f for f in stability if _subject(f) == "warmup"]
        sustained = any(f.state == "firing" for f in by_code.get("divergence", []))
        if sustained:
            # A loss that diverged and stays up also "plateaus" and, in its noise, may
            # "overfit": artefacts of the same cause, not causes of their own.
            diverged_at = min(f.first_step or 0 for f in by_code["divergence"])
            members += [
                f
                for code in ("plateau", "overfit")
                for f in by_code.get(code, [])
                if code == "plateau" or (f.first_step or 0) >= diverged_at
            ]
        early = all((f.first_step or 0) < EARLY_STEPS for f in members)
        no_warmup = bool(missing_warmup) or _config_number(facts.config, "warmup_steps") == 0
        if no_warmup and early and not sustained:
            group = take("missing_warmup", members + missing_warmup)
            _describe_missing_warmup(group, facts)
        else:
            linked = [f for f in stability if _subject(f) in ("warmup", "grad_clip")]
            group = take("lr_too_high", members + linked)
            _describe_lr_too_high(group, facts)
    for finding in by_code.get("plateau", []):
        if finding.id in taken:
            continue
        low_lr = str(finding.evidence.get("cause", "")).startswith("learning rate too low")
        low_updates = [f for f in by_code.get("update_ratio", []) if _too_small(f)]
        if low_lr:
            group = take("lr_too_low", [finding] + [f for f in low_updates if f.id not in taken])
            _describe_lr_too_low(group, facts)
        else:
            _describe_single(take("plateau", [finding]), facts)
    rest = [f for f in findings if f.id not in taken]
    bad_batches = [f for f in rest if f.code in ("loss_spike", "grad_norm_spike")]
    missing_warmup = [f for f in stability if _subject(f) == "warmup" and f.id not in taken]
    if (
        bad_batches
        and missing_warmup
        and all((f.first_step or 0) < EARLY_STEPS for f in bad_batches)
    ):
        # Early spikes in a run without warmup: the warmup is the likelier cause.
        group = take("missing_warmup", bad_batches + missing_warmup)
        _describe_missing_warmup(group, facts)
    elif bad_batches:
        group = take("bad_batch", bad_batches)
        _describe_bad_batch(group)
    rest = [f for f in findings if f.id not in taken]
    for finding in rest:
        if finding.id in taken:
            continue
        cause = _single_cause(finding)
        same = [f for f in rest if f.id not in taken and _single_cause(f) == cause]
        _describe_single(take(cause, same), facts)
    return groups


def _single_cause(finding: Finding) -> str:
    code = finding.code
    if code == "init_loss":
        return "init_scale" if (finding.evidence.get("ratio") or 1) > 1 else "data_leak"
    if code == "train_val_leak":
        return "data_leak"
    if code == "nonfinite":
        return "nonfinite_once" if finding.state != "firing" else "numerical_instability"
    if code == "clip_saturation":
        return "clip_threshold_low"
    if code == "stability":
        return "stability_config"
    if code in ("low_mfu", "mfu_measurement"):
        return code
    return {
        "overfit": "overfitting",
        "stalled": "stalled",
        "throughput_drop": "throughput",
        "resume_discontinuity": "resume",
        "update_ratio": "update_ratio",
        "activation_saturation": "activation_saturation",
        "activation_scale": "activation_scale",
        "dead_units": "dead_units",
        "lr_schedule": "lr_schedule",
        "early_stop": "early_stopped",
    }.get(code, code)


# -- texts ---------------------------------------------------------------------------


def _describe_lr_too_high(group: _Group, facts: RunFacts) -> None:
    lr = _config_number(facts.config, "lr")
    named = f"learning rate {lr:g}" if lr is not None else "the learning rate"
    group.title = f"The {named[0].lower()}{named[1:]} is too high"
    group.summary = _with_detail(
        f"{named[0].upper()}{named[1:]} is too high", _evidence_phrases(group.findings, facts)
    )
    lower = f" to about {lr / 10:.2g}-{lr / 3:.2g}" if lr is not None else ""
    # 3-10x lower from far too high is still too high: say where Adam usually trains.
    usual = (
        "; with Adam, GPTs of this size usually train at 1e-4 to 1e-3"
        if lr is not None and lr / 10 > ADAM_USUAL_MAX_LR
        else ""
    )
    clip = _config_number(facts.config, "grad_clip")
    extra = "" if clip else "; turn on gradient clipping at 1.0"
    first = min((f.first_step for f in group.findings if f.first_step is not None), default=None)
    if first == 0:
        restart = "Restart from scratch: the trouble began at the first step."
    elif first is not None:
        restart = (
            f"Restart from a checkpoint taken before step {first}, or from scratch if none "
            "is that early."
        )
    else:
        restart = "Restart from a checkpoint taken before the first symptom."
    group.fix = (
        f"Lower the learning rate{lower} (3-10x lower{usual}) and keep a warmup of a few "
        f"hundred steps{extra}. {restart}"
    )


def _describe_missing_warmup(group: _Group, facts: RunFacts) -> None:
    lr = _config_number(facts.config, "lr")
    at = f" at learning rate {lr:g}" if lr is not None else ""
    group.title = f"No warmup{at}: the first steps were unstable"
    group.summary = _with_detail(
        f"The run starts at its full learning rate with no warmup{at}",
        _evidence_phrases(group.findings, facts),
    )
    group.fix = (
        "Add a linear warmup (a few hundred steps, or about 1-5% of the run) so the "
        "optimizer's moment estimates settle before the learning rate reaches its peak."
    )


def _describe_lr_too_low(group: _Group, facts: RunFacts) -> None:
    lr = _config_number(facts.config, "lr")
    plateau = next(f for f in group.findings if f.code == "plateau")
    logged = plateau.evidence.get("lr")
    value = lr if lr is not None else logged
    named = f"learning rate {value:g}" if isinstance(value, int | float) else "the learning rate"
    group.title = f"The {named} is too low"
    drop = plateau.evidence.get("drop")
    steps = plateau.evidence.get("stretch_steps")
    pieces = []
    if isinstance(drop, int | float):
        during = f" in {steps} steps" if steps else ""
        pieces.append(f"the loss fell only {100 * drop:.1f}%{during}")
    small = [f for f in group.findings if f.code == "update_ratio"]
    if small:
        pieces.append(f"weight updates below the healthy band in {_layer_count(small)}")
    group.summary = _with_detail(f"{named[0].upper()}{named[1:]} is too low", pieces)
    higher = f" (try {value * 10:.2g})" if isinstance(value, int | float) else ""
    group.fix = f"Raise the learning rate 3-10x{higher}; a short LR range test finds the edge."


def _describe_bad_batch(group: _Group) -> None:
    loss = [f for f in group.findings if f.code == "loss_spike"]
    steps = sorted({f.first_step for f in group.findings if f.first_step is not None})
    where = ", ".join(str(s) for s in steps[:5])
    group.title = "A bad batch" if len(steps) <= 1 else "Bad batches"
    pieces = []
    for f in loss[:3]:
        value, ratio = f.evidence.get("value"), f.evidence.get("ratio")
        text = f"the loss jumped to {value:.3g} at step {f.first_step}" if value is not None else ""
        if text and ratio:
            text += f" ({ratio:.1f}x its median)"
        resolved = f.evidence.get("steps_to_resolve")
        if text and resolved is not None:
            text += f", back to its level after {_count(int(resolved), 'step')}"
        if text:
            pieces.append(text)
    for f in [f for f in group.findings if f.code == "grad_norm_spike"][:3]:
        value = f.evidence.get("value")
        if value is not None:
            pieces.append(f"the gradient norm jumped to {value:.3g} at step {f.first_step}")
    plural = "s" if len(steps) > 1 else ""
    group.summary = _with_detail(f"One-off spike{plural} at step{plural} {where}", pieces)
    group.fix = (
        "Look at the batch at that step (a wall of one token, corrupted or duplicated data). "
        "The run recovered; if spikes repeat, lower the learning rate or tighten the clip."
    )


def _describe_single(group: _Group, facts: RunFacts) -> None:
    first = group.findings[0]
    many = len(group.findings)
    group.title = first.title if many == 1 else f"{first.title} (x{many})"
    group.summary = _joined(_evidence_phrases(group.findings, facts)) or first.title
    group.fix = first.fix or ""


def _evidence_phrases(findings: Sequence[Finding], facts: RunFacts) -> list[str]:
    """A short clause per symptom, with its numbers, in a fixed causal order."""
    ln_v = math.log(facts.vocab_size) if facts.vocab_size and facts.vocab_size > 1 else None
    by_code: dict[str, list[Finding]] = {}
    for f in findings:
        by_code.setdefault(f.code, []).append(f)
    phrases: list[str] = []
    for f in by_code.get("stability", []):
        phrases.append(str(f.evidence.get("summary") or f.title).rstrip("."))
    for f in by_code.get("init_loss", []):
        first, ratio = f.evidence.get("first_loss"), f.evidence.get("ratio")
        if first is not None and ratio is not None:
            phrases.append(f"the first loss was {first:.3g}, {ratio:.1f}x ln(vocab_size)")
    for f in by_code.get("divergence", [])[:1]:
        value, held = f.evidence.get("value"), f.evidence.get("consecutive")
        if value is not None and f.first_step is not None:
            # The finding fires on the last of the steps the loss held up; it rose at the first.
            rose_at = f.first_step - int(held) + 1 if isinstance(held, int | float) else 0
            rose_at = max(rose_at, 0)
            times = f", {value / ln_v:.1f}x ln V" if ln_v else ""
            # The value is the firing step's, not the first raised step's: quote each
            # with its own step, so the text matches the chart.
            phrases.append(
                f"the loss rose at step {rose_at} and stayed up "
                f"({value:.3g} at step {f.first_step}{times})"
            )
    spikes = by_code.get("loss_spike", [])
    if spikes:
        worst = max(spikes, key=lambda f: f.evidence.get("value") or 0)
        value = worst.evidence.get("value")
        biggest = f", the largest to {value:.3g} at step {worst.first_step}" if value else ""
        phrases.append(f"{_count(len(spikes), 'loss spike')}{biggest}")
    grads = by_code.get("grad_norm_spike", [])
    if grads:
        phrases.append(_count(len(grads), "gradient-norm spike"))
    for f in by_code.get("clip_saturation", [])[:1]:
        fraction, typical = f.evidence.get("clip_fraction"), f.evidence.get("typical_grad_norm")
        clip = f.evidence.get("grad_clip")
        if fraction is not None:
            text = f"grad norm at the clip on {100 * fraction:.0f}% of steps"
            if typical is not None and clip is not None:
                text += f" (typical pre-clip norm {typical:.3g}, grad_clip {clip:g})"
            phrases.append(text)
    for code, what, stat in (
        ("activation_saturation", "MLP layers saturated", "frac_saturated"),
        ("dead_units", "MLP layers with most units dead", "frac_dead"),
        ("activation_scale", "layers with activations out of scale", "std"),
        ("update_ratio", "layers with updates outside the healthy band", "ratio"),
    ):
        if by_code.get(code):
            layers = _layers(by_code[code])
            total = facts.layer_counts.get(stat)
            of = f" of {total}" if total and total >= len(layers) else ""
            more = f", +{len(layers) - 4} more" if len(layers) > 4 else ""
            named = ", ".join(layers[:4]) + more
            phrases.append(f"{len(layers)}{of} {what} ({named})")
    for f in by_code.get("nonfinite", [])[:1]:
        key, value = f.evidence.get("key", "the loss"), f.evidence.get("value", "NaN")
        recovered = " and recovered" if f.state != "firing" else ""
        phrases.append(f"{key} was {value} at step {f.first_step}{recovered}")
    for f in by_code.get("lr_schedule", [])[:1]:
        phrases.append(_first_sentence(f))
    for code in ("overfit", "plateau", "train_val_leak", "stalled", "throughput_drop",
                 "low_mfu", "mfu_measurement", "resume_discontinuity"):  # fmt: skip
        for f in by_code.get(code, [])[:1]:
            phrases.append(_first_sentence(f))
    return [p for p in phrases if p]


# -- helpers -------------------------------------------------------------------------


def _document(group: _Group) -> dict[str, Any]:
    findings = group.findings
    severity = max((f.severity for f in findings), key=lambda s: SEVERITY_RANK.get(s, 0))
    starts = [f.first_step for f in findings if f.first_step is not None]
    ends = [f.last_step for f in findings if f.last_step is not None]
    ordered = sorted(findings, key=lambda f: (-1 if f.first_step is None else f.first_step, f.id))
    return {
        "cause": group.cause,
        "severity": severity,
        "title": group.title,
        "summary": _sentence(group.summary),
        "fix": group.fix,
        "first_step": min(starts) if starts else None,
        "last_step": max(ends) if ends else None,
        "finding_ids": [f.id for f in ordered],
        "symptoms": [
            {"finding_id": f.id, "code": f.code, "title": f.title, "layers": _layers([f])}
            for f in ordered
        ],
    }


def _layers(findings: Sequence[Finding]) -> list[str]:
    layers: list[str] = []
    for f in findings:
        subject = [f.evidence["subject"]] if "subject" in f.evidence else []
        listed = f.evidence.get("layers") or subject
        for layer in listed:
            if layer not in layers and isinstance(layer, str):
                layers.append(layer)
    return layers if any(f.code in _PER_LAYER for f in findings) else []


_PER_LAYER = ("activation_saturation", "dead_units", "activation_scale", "update_ratio")


def _layer_count(findings: Sequence[Finding]) -> str:
    return _count(len(_layers(findings)), "layer")


def _too_small(finding: Finding) -> bool:
    median, low = finding.evidence.get("median_ratio"), finding.evidence.get("low")
    return isinstance(median, int | float) and isinstance(low, int | float) and median < low


def _collapsed(finding: Finding) -> bool:
    ratio = finding.evidence.get("ratio")
    return isinstance(ratio, int | float) and ratio < 1


def _subject(finding: Finding) -> str:
    return str(finding.evidence.get("subject", ""))


def _config_number(config: Mapping[str, Any], name: str) -> float | None:
    value = config.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _first_sentence(finding: Finding) -> str:
    detail = str(finding.evidence.get("detail") or finding.explanation or "")
    head = detail.split(". ")[0].rstrip(".")
    return head if head else finding.title


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _joined(phrases: Sequence[str]) -> str:
    return ", ".join(phrases)


def _with_detail(head: str, phrases: Sequence[str]) -> str:
    """The head, then its details after a colon; the head alone when the findings carry
    no numbers to quote (evidence is free-form JSON: an older version's may lack a key)."""
    return f"{head}: {_joined(phrases)}" if phrases else head


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text.endswith(".") else text + "."
