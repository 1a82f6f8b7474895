"""The deploy wing: a trained student (registered in MLflow or a checkpoint folder) exported to
TorchScript or ONNX, checked against PyTorch on real images, and run on image files.

Modules: `source` (a model URI to the network and how to feed it), `inputs` (image files and
validation images, normalised as in training), `export` (the deployable file and its parity
check), `predict` (class-index PNGs and colour overlays).
"""

from hwd_tune.deploy.export import DEFAULT_TOLERANCE, EXPORT_FORMATS, Parity, export_model, export_student
from hwd_tune.deploy.inputs import read_images, validation_images
from hwd_tune.deploy.predict import PredictionFiles, predict_files, predict_images
from hwd_tune.deploy.source import open_student

__all__ = [
    "DEFAULT_TOLERANCE",
    "EXPORT_FORMATS",
    "Parity",
    "PredictionFiles",
    "export_model",
    "export_student",
    "open_student",
    "predict_files",
    "predict_images",
    "read_images",
    "validation_images",
]
