from app.rules.dead_units import DeadUnits
from tests.rules.helpers import findings, series

EVERY = 10  # instrument_interval


def dead(values: list[float], layer: str = "h1.mlp") -> dict:
    return {f"act/{layer}/frac_dead": series(values, every=EVERY)}


def test_a_layer_with_most_units_dead_warns_and_resolves_when_they_recover() -> None:
    values = [0.0, 0.1, 0.3, 0.45, 0.52, 0.58, 0.6, 0.6, 0.59, 0.2, 0.1, 0.05, 0.0]
    data = {**dead(values), **dead([0.02] * 13, "h0.mlp")}
    (episode,) = findings(DeadUnits, data)
    assert episode.code == "dead_units" and episode.subject == "h1.mlp"
    assert episode.severity == "warning"
    assert (episode.first_step, episode.last_step) == (40, 80)
    assert episode.evidence["frac_dead"] == 0.52 and episode.evidence["dead_fraction"] == 0.5
    assert episode.state == "resolved" and episode.evidence["resolved_step"] == 110


def test_healthy_levels_and_a_two_point_blip_stay_silent() -> None:
    values = [0.0, 0.09, 0.05, 0.04, 0.7, 0.7, 0.03, 0.02, 0.01, 0.0]
    assert findings(DeadUnits, dead(values)) == []


def test_the_init_transient_only_counts_when_nearly_every_unit_is_dead() -> None:
    assert findings(DeadUnits, dead([0.8, 0.8, 0.8] + [0.1] * 5)) == []
    (episode,) = findings(DeadUnits, dead([1.0, 1.0, 1.0] + [0.1] * 5))
    assert episode.first_step == 0 and episode.evidence["frac_dead"] == 1.0


def test_nan_points_are_left_to_nonfinite() -> None:
    nan = float("nan")
    assert findings(DeadUnits, dead([0.0] * 5 + [nan] * 10)) == []
