from app.rules.activation_saturation import ActivationSaturation
from tests.rules.helpers import findings, series

# Per-layer metrics are logged every 10 steps, as with instrument_interval=10.
EVERY = 10


def saturated(values: list[float], layer: str = "h1.mlp") -> dict:
    return {f"act/{layer}/frac_saturated": series(values, every=EVERY)}


def test_a_saturated_layer_warns_after_three_points_and_names_the_layer() -> None:
    data = {**saturated([0.0] * 10 + [0.12] * 10), **saturated([0.001] * 20, "h0.mlp")}
    (episode,) = findings(ActivationSaturation, data)
    assert episode.code == "activation_saturation" and episode.subject == "h1.mlp"
    assert episode.severity == "warning" and episode.state == "firing"
    assert episode.first_step == 100 and episode.last_step == 190
    assert episode.evidence["frac_saturated"] == 0.12
    assert episode.evidence["warning_fraction"] == 0.05


def test_most_units_saturated_escalates_to_critical_with_the_worst_evidence() -> None:
    values = [0.0] * 5 + [0.1] * 5 + [0.8] * 5 + [0.01] * 5
    (episode,) = findings(ActivationSaturation, saturated(values))
    assert episode.severity == "critical" and episode.first_step == 50
    assert episode.evidence["frac_saturated"] == 0.8
    assert episode.state == "resolved" and episode.evidence["resolved_step"] == 170


def test_healthy_levels_and_a_short_blip_stay_silent() -> None:
    values = [0.0, 0.0, 0.001, 0.004, 0.2, 0.3, 0.004, 0.005] * 3  # 2 points, not 3
    assert findings(ActivationSaturation, saturated(values)) == []


def test_the_init_transient_only_counts_when_extreme() -> None:
    moderate = [0.3, 0.3, 0.3] + [0.01] * 10  # first three points: the transient
    assert findings(ActivationSaturation, saturated(moderate)) == []
    extreme = [0.9, 0.9, 0.9] + [0.01] * 10
    (episode,) = findings(ActivationSaturation, saturated(extreme))
    assert episode.first_step == 0 and episode.severity == "critical"


def test_incremental_evaluation_matches_one_pass() -> None:
    values = ([0.0] * 4 + [0.07] * 4 + [0.6] * 3 + [0.02] * 4) * 4
    data = {**saturated(values), **saturated(values[::-1], "h0.mlp")}
    one_by_one = findings(ActivationSaturation, data, every=1)
    at_once = findings(ActivationSaturation, data, every=10_000)
    assert [e.to_state() for e in one_by_one] == [e.to_state() for e in at_once]
    assert len(one_by_one) >= 4
