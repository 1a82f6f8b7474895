"""The MLflow pyfunc of a registered student, logged as code ("models from code"), not as a pickle.

MLflow copies this file into the model and runs it when the model is loaded; the weights come from
the model's artifacts `model.pt` (read with weights_only=True) and `meta.json`, and the network is
rebuilt by `hwd_tune.models.load_deployable`, so the loading environment needs hwd-tune installed.
`predict(images)`: float32 [N, 3, H, W], normalised as the student's training data was (the
model's metadata names the normalisation) -> int64 class map [N, H, W].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel

from hwd_tune.models import class_maps, load_deployable


class StudentClassMaps(PythonModel):
    """Class maps of a student: the argmax of its main head's logits, upsampled to the input size."""

    def load_context(self, context: Any) -> None:
        self.student = load_deployable(Path(context.artifacts["weights"]).parent)

    # model_input without a type hint: MLflow would read one as its input schema (the signature is that)
    def predict(self, context, model_input, params=None):
        images = np.asarray(model_input, dtype=np.float32)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a float32 image batch [N, 3, H, W], got shape {images.shape}")
        return class_maps(self.student, torch.from_numpy(np.ascontiguousarray(images))).numpy()


mlflow.models.set_model(StudentClassMaps())
