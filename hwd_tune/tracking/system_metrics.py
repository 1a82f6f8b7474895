"""System metrics of a training run: MLflow's own monitor samples CPU, memory, disk, network and,
with nvidia-ml-py and an NVIDIA GPU, each GPU's utilisation and memory, as `system/...` metrics.

Only the rank-0 worker starts one; the run is tagged with that worker's node, since the samples
describe the whole machine. The monitor continues the step count of an earlier attempt of the run.
"""

from __future__ import annotations

from collections.abc import Mapping

import psutil
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

from hwd_tune.tracking.runs import set_tags
from hwd_tune.tracking.store import mlflow_client

SYSTEM_METRIC_PREFIX = "system/"  # MLflow's prefix: system/cpu_utilization_percentage, system/gpu_0_...
NODE_IP_TAG = "hwd.node_ip"
NODE_HOSTNAME_TAG = "hwd.node_hostname"


def start_system_metrics(
    tracking_uri: str, run_id: str, *, interval_s: float, node: Mapping[str, str]
) -> SystemMetricsMonitor:
    """Tags the run with `node` ({"ip", "hostname"}) and starts sampling every `interval_s` seconds
    in a daemon thread (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it); `.finish()` stops it.
    The monitor stops by itself once the run is no longer RUNNING."""
    if interval_s <= 0:
        raise ValueError(f"interval_s must be > 0 seconds, got {interval_s!r}")
    set_tags(mlflow_client(tracking_uri), run_id, {NODE_IP_TAG: node["ip"], NODE_HOSTNAME_TAG: node["hostname"]})
    psutil.cpu_percent()  # the first reading is measured from here, not from process start (psutil returns 0.0)
    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=interval_s, samples_before_logging=1, resume_logging=True, tracking_uri=tracking_uri
    )
    monitor.start()
    return monitor
