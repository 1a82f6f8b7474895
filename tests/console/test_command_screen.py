"""hwd_tune.console.screen through the real command line: `hwd-tune sweep` on a tiny sweep with real
Ray, its stdout a pipe (as in CI or `ray job logs`): plain progress lines only, no Ray worker line,
Ray's output in the run log whose path the first line gives (slow: real Ray in a subprocess)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.sweep.helpers import tiny_sweep

REPO = Path(__file__).resolve().parents[2]
PLAIN_LINE = re.compile(r"^\[\d\d:\d\d\] (stage|start|best|done|stopped|failed)\s+\S")
RAY_LINES = ("(RayTrainWorker pid=", "(TrainController pid=", "(raylet)", "core_worker.cc", "(run_trial pid=")
TUNE_LINES = ("Trial status:", "ExperimentalWarning", "tensorboard --logdir", "Downloading artifacts")


@pytest.mark.slow
@pytest.mark.timeout(900)  # its own Ray and two trials: about a minute on a quiet 2-core machine
def test_a_piped_sweep_prints_plain_lines_and_keeps_ray_in_the_run_log(tmp_path):
    import torch

    from hwd_tune.config import ModelConfig
    from tests.trainables.helpers import TINY_TEACHER
    from trainables.loop import model_from_config

    teacher = tmp_path / "teacher.pt"
    torch.save(model_from_config(ModelConfig.model_validate(TINY_TEACHER), 4).state_dict(), teacher)
    sweep = tiny_sweep(tmp_path / "outputs", str(teacher), num_samples=2, scheduler={"type": "none"})  # side by side
    sweep_file = tmp_path / "tiny.yaml"
    sweep_file.write_text(yaml.safe_dump(sweep.model_dump(mode="json")))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    environment.pop("RAY_ADDRESS", None)
    result = subprocess.run(
        [sys.executable, "-m", "hwd_tune.cli", "sweep", str(sweep_file)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,  # pipes: not a terminal
        text=True,
        timeout=840,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for line in RAY_LINES + TUNE_LINES:
        assert line not in out and line not in result.stderr, line
    assert "\x1b[" not in out  # no redraws, no colour codes

    first, *rest = out.splitlines()
    log = Path(re.match(r"log: (\S+)", first)[1])
    assert log.parent == (tmp_path / "outputs" / "logs").resolve() and log.name.endswith("-sweep.log")
    logged = log.read_text()
    assert "(TrainController pid=" in logged or "(RayTrainWorker pid=" in logged  # Ray's output, kept
    assert "Trial status:" in logged  # Tune's own progress tables

    progress = [line for line in rest if PLAIN_LINE.match(line)]
    events = [line.split()[1] for line in progress]
    assert events[0] == "stage" and "search tiny: 2 trials of tau, mu, beta" in progress[0]
    assert events.count("start") == 2 and events.count("done") == 2  # no scheduler: every trial completes
    assert events.count("best") >= 1
    starts = {line.split()[2] for line in progress if line.split()[1] == "start"}
    dones = {line.split()[2] for line in progress if line.split()[1] == "done"}
    assert starts == dones  # each trial by the same label
    assert all("iter 8/8, best " in line for line in progress if line.split()[1] == "done")
    assert any(line.startswith("Ray: Started a local Ray instance") for line in rest)
    assert len(out.splitlines()) < 60, out
