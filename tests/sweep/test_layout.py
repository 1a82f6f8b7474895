"""How a sweep's parent run is keyed: by what it searches, not by where it runs."""

from __future__ import annotations

from hwd_tune.sweep import layout
from tests.sweep.helpers import tiny_sweep


def test_sweep_key_ignores_where_it_runs_but_not_what_it_searches(tmp_path):
    base = tiny_sweep(tmp_path, "teacher.pt")
    moved = base.model_copy(deep=True)
    moved.resources.trial_cpus = 0.05
    moved.train.resources.cpus_per_worker = 0.25
    other_space = tiny_sweep(tmp_path, "teacher.pt", num_samples=5)
    assert layout.sweep_key(base) == layout.sweep_key(moved)
    assert layout.sweep_key(base) != layout.sweep_key(other_space)
    assert layout.sweep_key(base).startswith("sweep-tiny-")


def test_a_trial_run_is_named_by_its_params_as_the_paper_writes_them():
    assert layout.trial_run_name("hwd", {"tau": 4.0, "mu": 0.0, "beta": 0.1}) == "hwd τ=4 μ=0 β=0.1"
    assert layout.trial_run_name("kd", {"temperature": 2.3456, "steps": 3}) == "kd temperature=2.35 steps=3"
