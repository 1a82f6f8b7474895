"""trainables.hooks: off by default, each hook acts only at its iteration and rank."""

import os
import subprocess
import sys
import textwrap

import pytest

from trainables.hooks import LoopHooks


def test_a_users_loop_config_asks_for_no_hook(tmp_path):
    hooks = LoopHooks.from_loop_config({"train": {}, "tracking_uri": None, "mlflow_run_id": None}, rank=0)
    assert (hooks.fault_injection, hooks.fail_at_iteration, hooks.timing_file) == (None, None, None)
    for iteration in range(5):
        hooks.before_step(iteration)
        hooks.after_step(iteration + 1)
    assert list(tmp_path.iterdir()) == []


def test_fail_at_iteration_raises_at_that_iteration_only():
    hooks = LoopHooks.from_loop_config({"fail_at_iteration": 3}, rank=1)
    for iteration in (0, 1, 2, 4):
        hooks.before_step(iteration)
    with pytest.raises(RuntimeError, match=r"^failing on purpose at iteration 3 \(loop_config fail_at_iteration"):
        hooks.before_step(3)


def test_timing_file_gets_one_line_per_step_from_rank_zero_only(tmp_path):
    timing_file = tmp_path / "timing.txt"
    for rank in (1, 0):
        hooks = LoopHooks.from_loop_config({"timing_file": str(timing_file)}, rank=rank)
        for iteration in (1, 2, 3):
            hooks.after_step(iteration)
    rows = [line.split() for line in timing_file.read_text().splitlines()]
    assert [int(row[0]) for row in rows] == [1, 2, 3]  # rank 1 wrote nothing
    wall = [float(row[1]) for row in rows]
    cpu = [float(row[2]) for row in rows]
    assert wall == sorted(wall) and cpu == sorted(cpu)


def test_fault_injection_kills_the_named_rank_once_at_its_iteration(tmp_path):
    """The kill ends the process with exit code 1 after leaving the marker; with the marker
    present (the restarted worker) the same rank and iteration go on."""
    marker = tmp_path / "killed"
    fault = {"rank": 1, "iteration": 5, "marker": str(marker)}
    LoopHooks(rank=0, fault_injection=fault).before_step(5)  # another rank: nothing
    LoopHooks(rank=1, fault_injection=fault).before_step(4)  # another iteration: nothing
    assert not marker.exists()
    script = textwrap.dedent(f"""
        from trainables.hooks import LoopHooks
        LoopHooks(rank=1, fault_injection={fault!r}).before_step(5)
        print("survived")
    """)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 1 and "survived" not in first.stdout
    assert marker.read_text() == "5"
    second = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert second.returncode == 0 and second.stdout.strip() == "survived"
