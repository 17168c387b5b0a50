import numpy as np

from app.rules.throughput_drop import ThroughputDrop
from tests.rules.helpers import findings, series

N = 400


def _tokens(stall_from: int = 200, stall_steps: int = 50, level: float = 0.1) -> dict:
    rng = np.random.default_rng(0)
    tokens = 1e5 * (1 + 0.05 * rng.standard_normal(N))
    tokens[stall_from : stall_from + stall_steps] *= level
    return {"perf/tokens_per_sec": series(tokens)}


def test_a_sustained_drop_fires_at_its_start_and_resolves_after_it() -> None:
    (episode,) = findings(ThroughputDrop, _tokens())
    assert episode.code == "throughput_drop" and episode.severity == "warning"
    assert episode.first_step == 200
    assert episode.evidence["ratio"] < 0.2 and episode.evidence["robust_z"] < -3
    assert episode.evidence["max_ratio"] == 0.5
    assert episode.state == "resolved" and episode.evidence["resolved_step"] == 254


def test_a_few_slow_steps_or_a_mild_slowdown_stay_silent() -> None:
    assert findings(ThroughputDrop, _tokens(stall_steps=12)) == []  # another process, briefly
    assert findings(ThroughputDrop, _tokens(level=0.7)) == []  # 30% slower: noise on a CPU


def test_too_little_history_stays_silent() -> None:
    assert findings(ThroughputDrop, _tokens(stall_from=10)) == []


def test_incremental_evaluation_gives_the_same_episodes() -> None:
    data = _tokens()
    assert findings(ThroughputDrop, data, every=1) == findings(ThroughputDrop, data, every=1000)
