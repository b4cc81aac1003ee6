"""The probes' bounds: readiness needs a recent successful pass, liveness only a recent pass of any kind."""

from __future__ import annotations

from edgecompress_operator.config import Config
from edgecompress_operator.loops import PassHealth

CONFIG = Config(runner_image="runner:1", admission_interval_seconds=30, progress_interval_seconds=15)


def test_bounds_follow_the_settings() -> None:
    assert CONFIG.pass_interval_seconds == 15
    assert CONFIG.readiness_bound_seconds == 2 * 15 + 2 * 30


def test_not_ready_before_the_first_pass_but_alive_while_starting() -> None:
    health = PassHealth(started=1000.0)
    assert not health.ready(1001.0, bound=90)
    assert health.alive(1299.0, stall=300) and not health.alive(1301.0, stall=300)


def test_a_failed_pass_keeps_it_alive_but_not_ready() -> None:
    health = PassHealth(started=0.0)
    health.completed(succeeded=True, now=10.0)
    assert health.ready(50.0, bound=90)
    health.completed(succeeded=False, now=60.0)
    assert not health.ready(61.0, bound=90) and health.alive(61.0, stall=300)


def test_a_hung_pass_makes_it_unready_then_dead() -> None:
    health = PassHealth(started=0.0)
    health.completed(succeeded=True, now=10.0)
    assert health.ready(100.0, bound=90)
    assert not health.ready(101.0, bound=90), "no pass ended within two intervals plus two API timeouts"
    assert health.alive(310.0, stall=300) and not health.alive(311.0, stall=300)
