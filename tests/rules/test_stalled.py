from app.rules.base import RunView, SeriesView
from app.rules.episodes import advance
from app.rules.stalled import Stalled, StalledThresholds

LIMITS = StalledThresholds()


def _view(
    silent_for: float, seconds_per_step: float = 1.0, status: str = "running", **kwargs: object
) -> RunView:
    steps = range(100)
    times = [1000.0 + seconds_per_step * step for step in steps]
    loss = SeriesView.of(steps, [2.0] * 100, times)
    options = {"last_write_time": times[-1], "series": {"train/loss": loss}, **kwargs}
    return RunView(
        run_id=1,
        status=status,
        config={},
        since=99,
        last_step=99,
        now=times[-1] + silent_for,
        **options,  # type: ignore[arg-type]
    )


def test_a_running_run_silent_past_the_timeout_is_stalled_at_its_last_step() -> None:
    (observation,) = Stalled().check(_view(silent_for=600), LIMITS)
    assert observation.active and observation.step == 99
    assert observation.evidence["seconds_without_write"] == 600
    assert observation.evidence["threshold_seconds"] == 60  # the floor, for a fast run
    assert Stalled.severity == "critical" and Stalled.time_based
    (observation,) = Stalled().check(_view(silent_for=61), LIMITS)
    assert observation.active  # well under the 300 s of old


def test_slow_steps_raise_the_threshold() -> None:
    # A minute a step: 20 intervals is 20 minutes, longer than the 60 s floor.
    (observation,) = Stalled().check(_view(silent_for=600, seconds_per_step=60), LIMITS)
    assert not observation.active
    (observation,) = Stalled().check(_view(silent_for=1300, seconds_per_step=60), LIMITS)
    assert observation.active and observation.evidence["threshold_seconds"] == 1200


def test_new_steps_resolve_the_finding() -> None:
    open_episodes: dict = {}
    stalled = Stalled().check(_view(silent_for=600), LIMITS)
    (episode,) = advance(Stalled, open_episodes, stalled)
    assert episode.state == "firing" and episode.first_step == 99
    (episode,) = advance(Stalled, open_episodes, Stalled().check(_view(silent_for=5), LIMITS))
    assert episode.state == "resolved"


def test_without_a_write_time_the_latest_point_time_stands_in() -> None:
    # An offline replay: `now` is the replay's clock, the last point's time the write.
    (observation,) = Stalled().check(_view(silent_for=600, last_write_time=None), LIMITS)
    assert observation.active and observation.evidence["seconds_without_write"] == 600
    no_points = _view(silent_for=600, last_write_time=None, series={})
    assert Stalled().check(no_points, LIMITS) == []


def test_runs_that_are_not_running_are_never_stalled() -> None:
    for status in ("completed", "stopped", "failed", "interrupted", "queued"):
        assert not any(o.active for o in Stalled().check(_view(3600, status=status), LIMITS))


def test_the_runs_own_pauses_raise_the_threshold() -> None:
    view = _view(silent_for=100)
    loss = view.series("train/loss")
    loss.times[50:] += 120  # a 2-minute evaluation pause at step 50
    view.last_write_time = float(loss.times[-1])
    view.now = view.last_write_time + 200
    (observation,) = Stalled().check(view, LIMITS)
    assert not observation.active and observation.evidence == {}
    view.now = view.last_write_time + 250
    (observation,) = Stalled().check(view, LIMITS)
    assert observation.active and observation.evidence["threshold_seconds"] == 242


def test_time_stopped_or_queued_before_a_resume_does_not_count() -> None:
    # Stopped for 15 minutes, resumed 10 s ago: silent for 10 s, not 15 minutes.
    view = _view(silent_for=900)
    view.status_since = view.now - 10
    (observation,) = Stalled().check(view, LIMITS)
    assert not observation.active


def test_heartbeats_that_go_on_mean_stalled_and_heartbeats_that_stopped_mean_not_stalled() -> None:
    alive = _view(silent_for=600)
    alive.heartbeat_time = alive.now - 2  # the client's heartbeat thread still beats
    (observation,) = Stalled().check(alive, LIMITS)
    assert observation.active
    dead = _view(silent_for=600)
    assert dead.last_write_time is not None
    # Beat on for 30 s, then stopped (the watchdog will mark it crashed): no heartbeat
    # proves the process alive once the silence passed the 60 s threshold.
    dead.heartbeat_time = dead.last_write_time + 30
    (observation,) = Stalled().check(dead, LIMITS)
    assert not observation.active and observation.evidence["awaiting_heartbeat"] is True
    just_died = _view(silent_for=600)
    just_died.heartbeat_time = just_died.last_write_time  # died right after its last write
    (observation,) = Stalled().check(just_died, LIMITS)
    assert not observation.active
