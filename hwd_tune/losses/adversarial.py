"""Holistic adversarial distillation shared by SKD and IFVD: discriminator, hinge losses, base.

Liu et al., "Structured Knowledge Distillation for Dense Prediction" (TPAMI 2020), Sec. 3.3:
a spectral-norm, self-attention discriminator (SAGAN, Zhang et al., ICML 2019) scores the
teacher's class-score maps as real and the student's as fake, trained with the hinge loss
(Lim & Ye 2017; Miyato et al., ICLR 2018); the student is trained to raise its scores.
IFVD (Wang et al., ECCV 2020) reuses the same adversarial part.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from pydantic import BaseModel
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from hwd_tune.losses.distiller import Distiller
from hwd_tune.losses.distributed import is_distributed, world_size
from hwd_tune.losses.kd import KDLoss
from hwd_tune.losses.task import TaskLoss
from hwd_tune.outputs import SegOutput

LEAKY_SLOPE = 0.1  # the authors' sagan_models.py: LeakyReLU(0.1) after every strided conv
DOWNSAMPLING_STAGES = 4  # stride-2 4x4 convs; the authors' 64x64 setting (512 crops / 8)
SCORE_KERNEL = 4  # the last, plain (not spectral-normed) 4x4 conv that gives the scores
MIN_INPUT_SIZE = SCORE_KERNEL * 2**DOWNSAMPLING_STAGES  # 64: smaller maps are zero-padded


def hinge_discriminator_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Hinge loss of the critic: mean relu(1 - D(teacher)) + mean relu(1 + D(student)).

    Scores are [N, 1, h, w] (any equal shapes). SKD's holistic loss (Sec. 3.3) is a
    Wasserstein critic in the paper; the authors' scripts train it in this hinge form.
    """
    if real_scores.shape != fake_scores.shape:
        raise ValueError(
            f"real_scores {tuple(real_scores.shape)} and fake_scores {tuple(fake_scores.shape)} "
            "must have the same shape (teacher and student logits of equal size)"
        )
    return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()


def hinge_generator_loss(fake_scores: Tensor) -> Tensor:
    """The student's (generator's) hinge term: -mean D(student); minimising raises its scores."""
    return -fake_scores.mean()


class SelfAttention(nn.Module):
    """SAGAN self-attention over the h*w positions: x + gamma * attended(x), gamma starts at 0.

    Query and key project to channels // 8, as in SAGAN and the authors' discriminator.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 8:
            raise ValueError(f"SelfAttention channels must be >= 8, got {channels}")
        self.query = nn.Conv2d(channels, channels // 8, kernel_size=1)
        self.key = nn.Conv2d(channels, channels // 8, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        """[N, C, h, w] -> [N, C, h, w]."""
        n, c, h, w = x.shape
        query = self.query(x).flatten(2)  # [N, C/8, P]
        key = self.key(x).flatten(2)  # [N, C/8, P]
        value = self.value(x).flatten(2)  # [N, C, P]
        attention = torch.softmax(query.transpose(1, 2) @ key, dim=-1)  # [N, P(query), P(key)]
        attended = value @ attention.transpose(1, 2)  # [N, C, P(query)]
        return x + self.gamma * attended.view(n, c, h, w)


class LogitDiscriminator(nn.Module):
    """SKD's critic on class scores [N, K, h, w] -> realness scores [N, 1, h', w'].

    As the authors' models/sagan_models.py (preprocess mode 1, their default): BatchNorm over
    the K inputs, four spectral-norm 4x4 stride-2 convs of widths w, 2w, 4w, 8w with
    LeakyReLU(0.1), self-attention after the 4w and 8w stages, a plain 4x4 conv to one score.
    Maps smaller than 64 on a side (tiny test or synthetic crops) are zero-padded to 64 after
    the BatchNorm, so every input gives at least one score; 512-pixel crops are unaffected.
    """

    def __init__(self, num_classes: int, width: int = 64) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if width < 2:
            raise ValueError(f"discriminator width must be >= 2, got {width}")
        widths = [num_classes] + [width * 2**stage for stage in range(DOWNSAMPLING_STAGES)]
        self.input_norm = nn.BatchNorm2d(num_classes)
        self.stages = nn.Sequential(
            *(self._stage(widths[i], widths[i + 1], attend=i >= 2) for i in range(len(widths) - 1))
        )
        self.score = nn.Conv2d(widths[-1], 1, kernel_size=SCORE_KERNEL)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, attend: bool) -> nn.Sequential:
        """Spectral-norm 4x4 stride-2 conv + LeakyReLU, then self-attention in the last two."""
        conv = nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1)
        layers = [spectral_norm(conv), nn.LeakyReLU(LEAKY_SLOPE)]
        if attend:  # the authors attend after the 4w and 8w stages (256, 512 channels for w=64)
            layers.append(SelfAttention(out_channels))
        return nn.Sequential(*layers)

    def forward(self, logits: Tensor) -> Tensor:
        """[N, K, h, w] class scores -> [N, 1, h', w'] scores (h' = floor(max(h, 64) / 16) - 3)."""
        x = self.input_norm(logits)
        pad_h, pad_w = max(0, MIN_INPUT_SIZE - x.shape[-2]), max(0, MIN_INPUT_SIZE - x.shape[-1])
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.score(self.stages(x))


P = TypeVar("P", bound=BaseModel)


class AdversarialDistiller(Distiller[P]):
    """Base of SKD and IFVD: owns the discriminator (`self.adversary`) and its Adam.

    `adversarial_term()` gives the student's weighted hinge term; `adversary_step()` trains
    the discriminator on detached logits after the student's step. Params must carry
    kd_weight, kd_temperature, adv_weight and discriminator_{weight, lr, beta1, beta2, width}
    (SKDParams, IFVDParams).
    The Adam state travels in this module's state_dict (`_extra_state`); move the distiller
    to its device before `load_state_dict`, so the state is cast to the parameters' device.
    """

    def __init__(
        self,
        params: P,
        *,
        num_classes: int,
        feature_channels: tuple[int, int],
        task: TaskLoss,
    ) -> None:
        super().__init__(params, num_classes=num_classes, feature_channels=feature_channels, task=task)
        self.kd = KDLoss(temperature=params.kd_temperature)  # both methods add pixel-wise KD
        self.adversary = LogitDiscriminator(num_classes, width=params.discriminator_width)
        self.adversary_optimizer = torch.optim.Adam(
            self.adversary.parameters(),
            lr=params.discriminator_lr,
            betas=(params.discriminator_beta1, params.discriminator_beta2),
        )

    def kd_term(self, student: SegOutput, teacher: SegOutput) -> Tensor:
        """kd_weight * pixel-wise KD of the main-head logits."""
        return self.params.kd_weight * self.kd(student.logits, teacher.logits)

    def adversarial_term(self, student_logits: Tensor) -> Tensor:
        """adv_weight * hinge generator loss of the student's logits [N, K, h, w].

        Gradients also land on the discriminator's parameters; `adversary_step` clears them
        before its own backward, so they never reach the discriminator's update.
        """
        scores = self.adversary(student_logits)
        return self.params.adv_weight * hinge_generator_loss(scores)

    def adversary_step(self, student: SegOutput, teacher: SegOutput, labels: Tensor) -> dict[str, Tensor]:
        """One Adam step of the discriminator on detached logits; returns {"d": weighted loss}."""
        dtype = next(self.adversary.parameters()).dtype
        fake = student.logits.detach().to(dtype)
        real = teacher.logits.detach().to(dtype)
        with torch.enable_grad():
            self.adversary_optimizer.zero_grad(set_to_none=True)  # drop the student term's grads
            # Student first, then teacher: the order of the authors' scripts (BatchNorm statistics).
            fake_scores = self.adversary(fake)
            real_scores = self.adversary(real)
            loss = self.params.discriminator_weight * hinge_discriminator_loss(real_scores, fake_scores)
            loss.backward()
        _average_gradients_across_workers(self.adversary)
        self.adversary_optimizer.step()
        return {"d": loss.detach()}

    def get_extra_state(self) -> dict[str, Any]:
        """The discriminator's Adam state, saved with the distiller's state_dict."""
        return {"adversary_optimizer": self.adversary_optimizer.state_dict()}

    def set_extra_state(self, state: Any) -> None:
        """Restores the discriminator's Adam state written by `get_extra_state`."""
        if not isinstance(state, dict) or "adversary_optimizer" not in state:
            raise ValueError(
                f"distiller {self.name!r}: extra state must be a dict with key "
                f"'adversary_optimizer', got {type(state).__name__}"
            )
        self.adversary_optimizer.load_state_dict(state["adversary_optimizer"])


def _average_gradients_across_workers(module: nn.Module) -> None:
    """Averages `module`'s gradients over DDP workers (what DDP did for the authors' D)."""
    if not is_distributed():
        return
    for parameter in module.parameters():
        if parameter.grad is not None:
            torch_dist.all_reduce(parameter.grad)
            parameter.grad.div_(world_size())
