import numpy as np

from app.rules.activation_scale import ActivationScale
from tests.rules.helpers import findings, series

EVERY = 10  # instrument_interval


def stds(layer: str, values: list[float] | np.ndarray) -> dict:
    return {f"act/{layer}/std": series(values, every=EVERY)}


def healthy_resid(n: int, init: float) -> np.ndarray:
    """A residual stream growing ~50x from its init scale, as in the healthy preset."""
    return init * (1 + 49 * (1 - np.exp(-np.arange(n) / 4)))


def test_a_residual_stream_blowing_up_warns_against_its_init_scale() -> None:
    blown = [0.03, 300.0, 400.0] + [450.0] * 7
    data = {**stds("h0.resid", blown), **stds("h1.resid", healthy_resid(10, 0.03))}
    (episode,) = findings(ActivationScale, data)
    assert episode.code == "activation_scale" and episode.subject == "h0.resid"
    assert episode.severity == "warning" and episode.first_step == 30
    assert episode.evidence["reference_std"] == 0.03 and episode.evidence["reference_step"] == 0
    assert episode.evidence["ratio"] == 450.0 / 0.03
    assert episode.evidence["growth_ratio"] == 1000.0


def test_a_collapsing_layer_warns() -> None:
    values = [0.2, 0.2, 0.19, 0.1, 0.01, 0.0015, 0.001, 0.0009, 0.0008, 0.0008]
    (episode,) = findings(ActivationScale, stds("h2.mlp", values))
    assert episode.subject == "h2.mlp" and episode.first_step == 50
    assert episode.evidence["std"] == 0.0015  # below 1% of 0.2 before the 1e-3 floor
    assert "collapsed to" in episode.detail


def test_growth_with_depth_warns_on_the_stack() -> None:
    layers = {f"h{i}.resid": healthy_resid(12, 0.03) * 2.5**i for i in range(4)}
    data = {key: view for layer, v in layers.items() for key, view in stds(layer, v).items()}
    (episode,) = findings(ActivationScale, data)
    assert episode.subject == "h0.resid..h3.resid" and episode.first_step == 30
    assert abs(episode.evidence["ratio"] - 2.5**3) < 1e-9
    assert episode.evidence["depth_ratio"] == 10.0


def test_healthy_growth_and_a_wild_init_transient_stay_silent() -> None:
    data = {}
    for i in range(4):
        resid = healthy_resid(24, 0.03 + 0.005 * i)
        resid[1] *= 10 if i == 3 else 1  # the last block leads the first early on
        data |= stds(f"h{i}.resid", resid)
        data |= stds(f"h{i}.mlp", 0.22 * (1 + 3 * (1 - np.exp(-np.arange(24) / 8))))
    assert findings(ActivationScale, data) == []


def test_incremental_evaluation_matches_one_pass() -> None:
    data = {
        **stds("h0.resid", [0.03] * 3 + [0.03, 5.0, 6.0, 7.0] * 4),
        **stds("h1.resid", [0.03] * 3 + [0.03, 600.0, 700.0, 800.0] * 4),
        **stds("h1.mlp", [0.2] * 6 + [0.0001] * 6 + [0.2] * 6),
    }
    one_by_one = findings(ActivationScale, data, every=1)
    at_once = findings(ActivationScale, data, every=10_000)
    assert [e.to_state() for e in one_by_one] == [e.to_state() for e in at_once]
    assert {e.subject for e in one_by_one} == {"h1.resid", "h1.mlp", "h0.resid..h1.resid"}
    # One clear point between bursts does not resolve (keep_firing_for = 3).
    assert len(one_by_one) == 3
