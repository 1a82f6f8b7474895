"""The TorchTrainer every training job runs under: Ray's, less the per-run actors it does not use.

Ray Train v2 starts a `DatasetManager` actor for every run, even one without Ray Datasets (ours
read their images in the loop, `hwd_tune.data`): one more Python process importing Ray Data
(~2-3 CPU s under import profiling) per run, in every sweep trial too.
With no `datasets`, the trainer here hands the workers an empty shard provider instead.
"""

from __future__ import annotations

from typing import Any

from ray.train.torch import TorchTrainer

try:  # Ray's internals: without them (another Ray version), the trainer stays Ray's own
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
except ImportError:  # pragma: no cover - the pinned Ray has it (tests/trainables/test_loop.py)
    DatasetsCallback = None


class NoDatasetShards:
    """The shard provider of a run without Ray Datasets: asking it for one is a programming error."""

    def get_dataset_shard(self, dataset_info: Any) -> Any:
        name = getattr(dataset_info, "dataset_name", dataset_info)
        raise KeyError(f"no Ray Dataset {name!r}: hwd-tune's loop reads its own data")


if DatasetsCallback is not None:

    class _WithoutDatasets(DatasetsCallback):
        """DatasetsCallback that starts no DatasetManager actor when the run has no datasets."""

        def before_init_train_context(self, workers: list) -> dict[str, list]:
            return {"dataset_shard_provider": [NoDatasetShards()] * len(workers)}


class SegmentationTrainer(TorchTrainer):
    """`TorchTrainer` without Ray Data's per-run actor when it is given no datasets."""

    def _create_default_callbacks(self) -> list:
        callbacks = super()._create_default_callbacks()
        if self.datasets or DatasetsCallback is None:
            return callbacks
        return [
            _WithoutDatasets(train_run_context=self.train_run_context, datasets={})
            if type(callback) is DatasetsCallback
            else callback
            for callback in callbacks
        ]
