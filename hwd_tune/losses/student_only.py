"""The "none" method of Table II: the student trained on the task loss alone (also teachers)."""

from __future__ import annotations

from torch import Tensor

from hwd_tune.config import NoDistillationParams
from hwd_tune.losses.distiller import Distiller, register_distiller
from hwd_tune.outputs import SegOutput


@register_distiller("none", params=NoDistillationParams)
class StudentOnly(Distiller[NoDistillationParams]):
    """No teacher signal: only `ce` (+ `aux`). Teacher training uses this distiller too."""

    needs_teacher = False

    def distill(self, student: SegOutput, teacher: SegOutput, labels: Tensor) -> dict[str, Tensor]:
        return {}
