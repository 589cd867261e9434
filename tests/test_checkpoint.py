"""Checkpoints on disk and the fixed/adaptive (Weibull) checkpoint interval."""

import math

import numpy as np
import pytest

from agents.checkpoint import (
    CheckpointPolicy,
    LifeLog,
    Weibull,
    best_interval,
    fit_weibull,
    load_checkpoint,
    save_checkpoint,
)


def test_a_checkpoint_round_trips_and_a_damaged_one_is_named(tmp_path):
    path = tmp_path / "d1h1.npz"
    assert load_checkpoint(path) is None
    model = np.random.default_rng(0).normal(size=1000)
    save_checkpoint(path, 7, model)
    saved = load_checkpoint(path)
    assert saved.round == 7 and np.array_equal(saved.model, model)
    assert not list(tmp_path.glob("*.tmp"))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="d1h1.npz"):
        load_checkpoint(path)


def test_the_fit_recovers_the_failure_model():
    truth = Weibull(shape=0.7, scale=300.0)
    samples = truth.scale * np.random.default_rng(1).weibull(truth.shape, size=2000)
    fitted = fit_weibull(list(samples))
    assert fitted.shape == pytest.approx(0.7, rel=0.08) and fitted.scale == pytest.approx(300, rel=0.1)
    with pytest.raises(ValueError, match="at least 2"):
        fit_weibull([5.0])


def test_exponential_failures_give_youngs_interval():
    mtbf, checkpoint_s, round_s = 1000.0, 2.0, 1.0
    young = math.sqrt(2 * checkpoint_s * mtbf) / round_s  # about 63 rounds
    tau = best_interval(Weibull(1.0, mtbf), age_s=0.0, round_s=round_s, checkpoint_s=checkpoint_s,
                        recovery_s=0.0, max_interval=500)
    assert abs(tau - young) / young < 0.15


def test_early_failures_mean_frequent_checkpoints_right_after_a_restart():
    infant = Weibull(0.5, 200.0)
    young = best_interval(infant, age_s=1.0, round_s=1.0, checkpoint_s=0.5, recovery_s=5.0)
    old = best_interval(infant, age_s=2000.0, round_s=1.0, checkpoint_s=0.5, recovery_s=5.0)
    assert young < old
    wearing = Weibull(3.0, 200.0)
    assert (best_interval(wearing, age_s=1.0, round_s=1.0, checkpoint_s=0.5, recovery_s=5.0)
            > best_interval(wearing, age_s=180.0, round_s=1.0, checkpoint_s=0.5, recovery_s=5.0))


def test_the_policy_keeps_its_fixed_interval_until_it_has_seen_enough_failures():
    fixed = CheckpointPolicy(every=3, adaptive=True, uptimes=[10.0, 12.0])
    assert [fixed.due(age_s=r, round_s=1.0) for r in range(1, 7)] == [False, False, True, False, False, True]
    adaptive = CheckpointPolicy(every=3, adaptive=True, uptimes=[5.0, 7.0, 6.0, 8.0, 4.0],
                                checkpoint_s=0.01, recovery_s=1.0)
    assert adaptive.model is not None and adaptive.interval(age_s=0.0, round_s=1.0) < 3  # fails every ~6 s
    with pytest.raises(ValueError, match="at least 1"):
        CheckpointPolicy(every=0)


def test_the_life_log_counts_lives_that_never_ended_cleanly_as_failures(tmp_path):
    path = tmp_path / "lives.json"
    first = LifeLog(path)
    first.begin(100.0)
    first.alive(130.0)  # then killed
    second = LifeLog(path)
    second.begin(140.0)
    second.alive(150.0)
    second.end()
    assert LifeLog(path).uptimes() == [30.0]
