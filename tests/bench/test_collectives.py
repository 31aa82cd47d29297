"""The ring all-reduce model the Ray projection rests on: fitted to timings, it gives back the message cost and
bandwidth they were made with; a projected step is the measured compute plus the model's all-reduce."""

import pytest

from scaleout.bench.collectives import compute_model, fit_ring, project, ring_seconds


def test_the_fit_recovers_the_message_cost_and_bandwidth_the_timings_were_made_with():
    alpha, beta = 1.2e-3, 3e8
    points = [(n, m, ring_seconds(n, m, alpha, beta) * (1 + noise))
              for n in (2, 3, 4) for m, noise in ((8e3, 0.01), (1.3e5, -0.01), (5e5, 0.005), (1e6, 0.0))]
    ring = fit_ring(points)
    assert ring["alpha_s"] == pytest.approx(alpha, rel=0.03)
    assert ring["beta_bytes_per_s"] == pytest.approx(beta, rel=0.1)
    assert 0 < ring["max_relative_error"] < 0.02


def test_a_ring_sends_two_messages_per_other_worker_and_nothing_alone():
    assert ring_seconds(1, 1e6, 1e-3, 1e9) == 0.0
    assert ring_seconds(2, 0, 1e-3, 1e9) == pytest.approx(2e-3)
    assert ring_seconds(4, 0, 1e-3, 1e9) == pytest.approx(6e-3)
    assert ring_seconds(4, 4e6, 0, 1e9) == pytest.approx(2 * 3 / 4 * 4e-3)  # each of 2(N-1) messages: M/N bytes


def test_timings_that_are_not_a_ring_are_refused():
    with pytest.raises(ValueError, match="do not fit a ring all-reduce"):
        fit_ring([(2, 1e3, 5e-3), (3, 1e3, 1e-3), (4, 1e3, 1e-4)])  # faster with more workers


def test_the_projection_passes_through_the_two_measured_steps():
    one, two_compute, batch, nbytes, alpha, beta = 10.0, 7.0, 1024, 2.6e5, 1e-3, 3e8
    fixed, half = compute_model(one, two_compute)
    assert (fixed, half) == (4.0, 3.0)  # 1 worker: 4 + 2 x 3; 2 workers: 4 + 3
    rows = {r["workers"]: r for r in project(batch, nbytes, one, two_compute, alpha, beta, [1, 2, 4, 16])}
    assert rows[1] == {"workers": 1, "compute_ms": 10.0, "collective_ms": 0.0, "step_ms": 10.0,
                       "examples_per_second": 102_400}
    assert rows[2]["compute_ms"] == 7.0
    assert rows[2]["collective_ms"] == pytest.approx(1000 * ring_seconds(2, nbytes, alpha, beta), abs=0.01)
    assert rows[4]["compute_ms"] == 5.5 and rows[16]["compute_ms"] == 4.38  # the fixed part stays
    for r in rows.values():  # the global batch over the step (its parts rounded to 0.01 ms)
        assert r["examples_per_second"] == pytest.approx(1000 * batch / r["step_ms"], rel=1e-3)
    assert rows[16]["examples_per_second"] < rows[4]["examples_per_second"]  # the messages outgrow the compute
