"""The sweep's own `register_champion`, without Ray: given a judged final stage whose runs hold
their best weights in a real sqlite store, the winner's best seed becomes @champion, which
`mlflow.pyfunc` loads and whose class maps are that checkpoint's."""

from __future__ import annotations

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient

from hwd_tune import tracking
from hwd_tune.sweep.final_stage import Candidate, CandidateResult, judge, register_champion
from tests.deploy.helpers import fluent_mlflow_store, reference_class_maps, write_student
from tests.sweep.helpers import tiny_sweep

NAME = "student-synthetic-deeplabv3_resnet18"


def test_the_winners_best_seed_is_registered_as_champion_and_loads_through_pyfunc(tmp_path):
    sweep = tiny_sweep(tmp_path, "teacher.pt", final={"top_k": 1, "seeds": [0, 1]})
    uri = sweep.train.tracking.uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run_ids, checkpoints = {}, {}
    for seed in (0, 1):
        checkpoints[seed] = write_student(tmp_path / f"seed{seed}" / "best_checkpoint", seed=seed)
        run_ids[seed] = tracking.start_run(
            tracking_uri=uri, experiment="tests", run_key=f"s{seed}", run_name=f"s{seed}"
        )
        client.log_artifacts(run_ids[seed], str(checkpoints[seed]), "best_checkpoint")
    top = CandidateResult(Candidate("top-1", "hwd", {"tau": 2.0}, "tuned"), {0: 40.0, 1: 45.0}, dict(run_ids))
    final = judge([top], [0, 1], "max")

    champion = register_champion(sweep, final, tracking_uri=uri)

    version = client.get_model_version_by_alias(NAME, "champion")
    assert champion == f"models:/{NAME}/{version.version}" and version.run_id == run_ids[1]  # seed 1: 45 > 40
    assert version.tags["hwd.final.label"] == "top-1" and float(version.tags["hwd.final.mean"]) == 42.5
    with fluent_mlflow_store(uri):
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    images = torch.randn(2, 3, 48, 48)
    assert np.array_equal(model.predict(images.numpy()), reference_class_maps(checkpoints[1], images).numpy())
    assert not np.array_equal(model.predict(images.numpy()), reference_class_maps(checkpoints[0], images).numpy())
    assert register_champion(sweep, judge([], [0, 1], "max"), tracking_uri=uri) is None
