"""MLflow's system metrics monitor on a real sqlite run: CPU and memory always, GPU where one is lent."""

from __future__ import annotations

import os
import time

import psutil
import pytest

from hwd_tune import tracking
from tests.tracking.helpers import new_run

NODE = {"ip": "127.0.0.1", "hostname": "test-node"}


def sample_for(store, key: str, seconds: float) -> str:
    run_id = new_run(store, key)
    monitor = tracking.start_system_metrics(store[1], run_id, interval_s=0.2, node=NODE)
    time.sleep(seconds)
    monitor.finish()
    return run_id


def test_cpu_and_memory_are_sampled_and_the_run_is_tagged_with_its_node(store, client):
    run_id = sample_for(store, "system-metrics-cpu", 1.5)
    run = client.get_run(run_id)
    assert (
        run.data.tags[tracking.NODE_IP_TAG] == "127.0.0.1" and run.data.tags[tracking.NODE_HOSTNAME_TAG] == "test-node"
    )
    cpu = client.get_metric_history(run_id, "system/cpu_utilization_percentage")
    memory = client.get_metric_history(run_id, "system/system_memory_usage_megabytes")
    assert len(cpu) >= 2 and len(memory) == len(cpu)
    assert [m.step for m in cpu] == list(range(len(cpu)))  # one step per sample
    assert all(0.0 <= m.value <= 100.0 for m in cpu)  # psutil's whole-machine percentage
    total_mb = psutil.virtual_memory().total / 1e6
    assert all(0.0 < m.value < total_mb for m in memory)


def test_a_second_monitor_on_the_same_run_continues_its_steps(store, client):
    run_id = sample_for(store, "system-metrics-resume", 0.7)
    first = len(client.get_metric_history(run_id, "system/cpu_utilization_percentage"))
    monitor = tracking.start_system_metrics(store[1], run_id, interval_s=0.2, node=NODE)
    time.sleep(0.7)
    monitor.finish()
    steps = [m.step for m in client.get_metric_history(run_id, "system/cpu_utilization_percentage")]
    assert steps == list(range(len(steps))) and len(steps) > first


def test_the_interval_must_be_positive(store):
    with pytest.raises(ValueError, match=r"interval_s must be > 0 seconds, got 0"):
        tracking.start_system_metrics(store[1], "any", interval_s=0, node=NODE)


def nvidia_gpu_reason() -> str | None:
    """Why the GPU path cannot be tested here (None when an NVIDIA GPU answers NVML)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except Exception as error:  # noqa: BLE001 - any NVML failure means: no GPU to test on
        return f"no NVIDIA GPU through NVML ({type(error).__name__}: {error})"
    return None if count else "NVML found no GPU"


@pytest.mark.skipif(nvidia_gpu_reason() is not None, reason=str(nvidia_gpu_reason()))
def test_each_gpu_reports_its_utilisation_and_memory(store, client):
    import pynvml
    import torch

    held = torch.ones(64, 1024, 1024, device="cuda")  # 256 MB on GPU 0, so its memory is in use
    run_id = sample_for(store, "system-metrics-gpu", 1.5)
    metrics = client.get_run(run_id).data.metrics
    pynvml.nvmlInit()
    for index in range(pynvml.nvmlDeviceGetCount()):
        total_mb = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).total / 1e6
        assert 0.0 <= metrics[f"system/gpu_{index}_utilization_percentage"] <= 100.0
        assert 0.0 <= metrics[f"system/gpu_{index}_memory_usage_megabytes"] <= total_mb
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    gpu = int(visible) if visible.isdigit() else 0
    assert metrics[f"system/gpu_{gpu}_memory_usage_megabytes"] >= 256 * 1.048  # at least what this test holds
    del held
