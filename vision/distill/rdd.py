"""RDD, relative difficulty distillation for semantic segmentation (Liang, Sun, Du, Chen, Huang,
arXiv 2407.03719; authors' code github.com/sunyueue/RDD, read at 6aa347a, where the stages are
called VGD = TFE-RDD and EDD = TSE-RDD). RDD adds no distillation objective: it keeps pixel-wise KD
and changes which pixels the student's task (CE) loss attends to. With teacher logits (t, tᵃ) of
its main and auxiliary heads, student logits (s, sᵃ), labels y, iteration counter it = 1, 2, ...:

    L      = L_task + kd_weight * T^2 * (1/P) sum_p KL(softmax(t_p/T) || softmax(s_p/T))    (every stage)
    TFE-RDD, it <  warmup:  D_p = KL(p_aux || p_main) of the teacher,  w_p = exp(-D_p)
             L_task = (1/(B*H*W)) sum_p w_p * (CE_p(s, y) + 0.4 * CE_p(sᵃ, y))   (ignored pixels give 0)
    TSE-RDD, it >= warmup:  hard_m = valid & (p^m_gt <= max(0.7, min_kept-th smallest p^m_gt))
             S = hard_student XOR hard_teacher
             L_task = CE(s, y) averaged over S  +  0.4 * the same from (sᵃ, tᵃ)

so the student first learns the pixels the teacher finds easy (its two heads agree), then only
the pixels whose difficulty differs between teacher and student; pixels both find easy, and
pixels both find hard (likely ambiguous or mislabelled), are dropped. The KD term is
:func:`vision.distill.kd.softmax_kd` on the dense main logits (every pixel a row).

Deviations and choices (each a config field where it is one):
- **An empty selection S gives L_task = 0** (finite), so the KD term still trains. The released
  code's weighted CE with reduction 'mean' is NaN there, and AMP's GradScaler then skips the
  whole step, KD included. This is deliberate.
- min_kept is a share of the valid pixels of the batch (``min_kept_ratio`` = 0.05, about the
  code's 100 000 of 2.1M), clamped to [1, valid]; the code's absolute count crashes when it
  exceeds the valid pixels.
- The TFE weight map is resized to the label size, not the code's hard-coded 512x1024; the
  class weights of the OHEM CE are ``class_weights`` (None: unweighted), not Cityscapes' 19.
- ``tfe_over_all_pixels`` (default True, as the code) averages the TFE loss over every crop pixel,
  ignored ones included; False averages over the valid ones.
- ``selection`` offers the paper's ablations: xor (RDD), or, and, student (OHEM on the student).
- Losses are computed in fp32 from the (possibly bf16 autocast) logits; no GradScaler (bf16).
Omitted from the paper/code: the Table 6 variant that blends TSE and TFE after warmup
(λ = (it - max)/(warmup - max)); combining RDD with other segmentation KD losses (CIRKD, CWD, ...);
the authors' ResNet/MobileNet DeepLab models, Cityscapes/VOC/CamVid/ADE20K data, multi-GPU
training and multi-scale evaluation. [assumed] The paper's tables were not readable here; the
spec and the code are followed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from curate.core.errors import BadInputError
from vision.distill.base import Distiller
from vision.distill.kd import softmax_kd
from vision.distill.segnets import upsample
from vision.train import Method

Outputs = dict[str, torch.Tensor]  # {'out': (B, C, h, w) logits, optionally 'aux'}


def pixel_ce(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Per-pixel CE (B, H, W) in fp32 of logits resized to the labels' size; 0 on ignored pixels."""
    return F.cross_entropy(upsample(logits.float(), labels.shape[-2:]), labels, ignore_index=ignore_index,
                           reduction="none")


def tfe_weights(main: torch.Tensor, aux: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """exp(-KL(p_aux || p_main)) per pixel of the teacher's two heads, (B, H, W) at ``size``."""
    log_main, log_aux = main.float().log_softmax(1), aux.float().log_softmax(1)
    disagreement = (log_aux.exp() * (log_aux - log_main)).sum(1, keepdim=True)
    return upsample(torch.exp(-disagreement), size)[:, 0]


def tfe_task_loss(student: Outputs, teacher: Outputs, labels: torch.Tensor, ignore_index: int,
                  aux_weight: float = 0.4, over_all_pixels: bool = True) -> torch.Tensor:
    """TFE-RDD: the student's per-pixel CE (plus aux_weight x its aux head's) weighted by the
    teacher's agreement map, averaged over all crop pixels (or the valid ones)."""
    weights = tfe_weights(teacher["out"], teacher["aux"], labels.shape[-2:])
    per_pixel = pixel_ce(student["out"], labels, ignore_index)
    if "aux" in student:
        per_pixel = per_pixel + aux_weight * pixel_ce(student["aux"], labels, ignore_index)
    weighted = weights * per_pixel
    if over_all_pixels:
        return weighted.mean()
    valid = labels != ignore_index
    return weighted.sum() / valid.sum().clamp_min(1)


def ohem_hard(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, thresh: float = 0.7,
              min_kept_ratio: float = 0.05) -> torch.Tensor:
    """OHEM's hard pixels (B, H, W bool): valid and p_gt <= max(thresh, the min_kept-th smallest
    p_gt over the valid pixels), with p_gt the softmax probability of the true class and
    min_kept = min_kept_ratio * valid pixels, clamped to [1, valid]."""
    valid = labels != ignore_index
    count = int(valid.sum())
    if count == 0:
        return valid
    prob = upsample(logits.detach().float(), labels.shape[-2:]).softmax(1)
    p_gt = prob.gather(1, labels.where(valid, 0).unsqueeze(1))[:, 0]
    min_kept = min(max(1, int(min_kept_ratio * count)), count)
    threshold = max(thresh, float(p_gt[valid].kthvalue(min_kept).values))
    return valid & (p_gt <= threshold)


SELECTIONS = {
    "xor": lambda student, teacher: student ^ teacher,  # RDD: difficulty differs
    "or": lambda student, teacher: student | teacher,
    "and": lambda student, teacher: student & teacher,
    "student": lambda student, teacher: student,  # plain OHEM on the student
}


def tse_selection(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, ignore_index: int,
                  thresh: float = 0.7, min_kept_ratio: float = 0.05, selection: str = "xor") -> torch.Tensor:
    """The pixels TSE-RDD's CE attends to: hard_student XOR hard_teacher (or an ablation's rule)."""
    hard_student = ohem_hard(student, labels, ignore_index, thresh, min_kept_ratio)
    hard_teacher = ohem_hard(teacher, labels, ignore_index, thresh, min_kept_ratio)
    return SELECTIONS[selection](hard_student, hard_teacher)


def selected_ce(logits: torch.Tensor, labels: torch.Tensor, selected: torch.Tensor, ignore_index: int,
                class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """sum_S w_y CE_p / sum_S w_y (w = 1 without class weights); 0 when S is empty (see the docstring)."""
    weights = selected.float()
    if class_weights is not None:
        weights = weights * class_weights.to(logits.device)[labels.where(labels != ignore_index, 0)]
    per_pixel = pixel_ce(logits, labels, ignore_index)
    return (weights * per_pixel).sum() / weights.sum().clamp_min(1e-12)


def tse_task_loss(student: Outputs, teacher: Outputs, labels: torch.Tensor, ignore_index: int,
                  aux_weight: float = 0.4, thresh: float = 0.7, min_kept_ratio: float = 0.05,
                  class_weights: torch.Tensor | None = None, selection: str = "xor") -> torch.Tensor:
    """TSE-RDD: CE over the XOR selection of the main heads, plus aux_weight x the same from the aux heads."""
    def term(key: str) -> torch.Tensor:
        chosen = tse_selection(student[key], teacher[key], labels, ignore_index, thresh, min_kept_ratio, selection)
        return selected_ce(student[key], labels, chosen, ignore_index, class_weights)

    loss = term("out")
    if "aux" in student:
        loss = loss + aux_weight * term("aux")
    return loss


def task_ce(student: Outputs, labels: torch.Tensor, ignore_index: int, aux_weight: float) -> torch.Tensor:
    """The ordinary task loss: CE over the valid pixels, plus aux_weight x the aux head's."""
    loss = F.cross_entropy(upsample(student["out"].float(), labels.shape[-2:]), labels, ignore_index=ignore_index)
    if "aux" in student:
        loss = loss + aux_weight * F.cross_entropy(upsample(student["aux"].float(), labels.shape[-2:]), labels,
                                                   ignore_index=ignore_index)
    return loss


@dataclass
class SegCEConfig:
    aux_weight: float = 0.4  # of the auxiliary head's CE, where the network has one

    def __post_init__(self) -> None:
        if self.aux_weight < 0:
            raise BadInputError(f"aux_weight must be >= 0, got {self.aux_weight}")


class SegmentationCE(Method):
    """The student alone: cross-entropy on the valid pixels (the baseline; also trains the teacher)."""

    name = "seg_ce"
    config_class = SegCEConfig

    def __init__(self, config: SegCEConfig | None = None):
        self.config = config or SegCEConfig()

    def seg_loss(self, student: Outputs, labels: torch.Tensor, iteration: int, teacher: Outputs | None,
                 ignore_index: int) -> tuple[torch.Tensor, dict[str, float]]:
        loss = task_ce(student, labels, ignore_index, self.config.aux_weight)
        return loss, {"task": float(loss.detach())}


@dataclass
class PixelKDConfig(SegCEConfig):
    temperature: float = 1.0
    kd_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature <= 0:
            raise BadInputError(f"temperature must be positive, got {self.temperature}")
        if self.kd_weight < 0:
            raise BadInputError(f"kd_weight must be >= 0, got {self.kd_weight}")


class PixelKD(Distiller):
    """Plain pixel-wise KD: the student's CE plus kd_weight * softmax_kd on the dense main logits."""

    name = "seg_kd"
    config_class = PixelKDConfig

    def __init__(self, config: PixelKDConfig | None = None):
        super().__init__()
        self.config = config or self.config_class()

    @torch.no_grad()
    def teacher_outputs(self, x: torch.Tensor) -> Outputs:
        if self.teacher is None:
            raise RuntimeError(f"{self.name}: no teacher; run it through run_segmentation_experiment or set_teacher()")
        self.teacher.eval()
        if next(self.teacher.parameters()).device != x.device:
            self.teacher.to(x.device)
        return {key: value.float() for key, value in self.teacher(x).items()}

    def kd_loss(self, student: Outputs, teacher: Outputs) -> torch.Tensor:
        return self.config.kd_weight * softmax_kd(student["out"], teacher["out"], self.config.temperature)

    def task_loss(self, student: Outputs, labels: torch.Tensor, iteration: int, teacher: Outputs,
                  ignore_index: int) -> torch.Tensor:
        return task_ce(student, labels, ignore_index, self.config.aux_weight)

    def seg_loss(self, student: Outputs, labels: torch.Tensor, iteration: int, teacher: Outputs | None,
                 ignore_index: int) -> tuple[torch.Tensor, dict[str, float]]:
        if teacher is None:
            raise RuntimeError(f"{self.name}: no teacher outputs")
        task = self.task_loss(student, labels, iteration, teacher, ignore_index)
        kd = self.kd_loss(student, teacher)
        return task + kd, {"task": float(task.detach()), "kd": float(kd.detach())}


@dataclass
class RDDConfig(PixelKDConfig):
    warmup: int = 4000  # iterations of TFE-RDD (the counter starts at 1: TFE runs warmup - 1 of them)
    ohem_thresh: float = 0.7
    min_kept_ratio: float = 0.05  # min_kept = this share of the batch's valid pixels
    class_weights: tuple[float, ...] | None = None  # of the TSE CE, one per class; None: unweighted
    tfe_over_all_pixels: bool = True  # the TFE mean over every crop pixel (ignored ones give 0)
    selection: str = "xor"  # TSE rule: xor (RDD), or, and, student (ablations)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.warmup < 0:
            raise BadInputError(f"warmup must be >= 0, got {self.warmup}")
        if not 0 <= self.ohem_thresh <= 1:
            raise BadInputError(f"ohem_thresh must be in [0, 1], got {self.ohem_thresh}")
        if not 0 < self.min_kept_ratio <= 1:
            raise BadInputError(f"min_kept_ratio must be in (0, 1], got {self.min_kept_ratio}")
        if self.selection not in SELECTIONS:
            raise BadInputError(f"selection must be one of {', '.join(SELECTIONS)}, got '{self.selection}'")
        if self.class_weights is not None and (not self.class_weights or min(self.class_weights) < 0):
            raise BadInputError(f"class_weights must be non-negative, one per class, got {list(self.class_weights)}")


class RDD(PixelKD):
    name = "rdd"
    config_class = RDDConfig
    needs_teacher_aux = True  # TFE reads the teacher's auxiliary head

    def stage(self, iteration: int) -> str:
        return "tfe" if iteration < self.config.warmup else "tse"

    def task_loss(self, student: Outputs, labels: torch.Tensor, iteration: int, teacher: Outputs,
                  ignore_index: int) -> torch.Tensor:
        if "aux" not in teacher:
            raise BadInputError("rdd: the teacher has no auxiliary head (teacher.aux: true); TFE-RDD needs one")
        c = self.config
        if self.stage(iteration) == "tfe":
            return tfe_task_loss(student, teacher, labels, ignore_index, c.aux_weight, c.tfe_over_all_pixels)
        weights = None
        if c.class_weights is not None:
            if len(c.class_weights) != student["out"].shape[1]:
                raise BadInputError(f"class_weights: {len(c.class_weights)} weights for {student['out'].shape[1]} classes")
            weights = torch.tensor(c.class_weights, dtype=torch.float32)
        return tse_task_loss(student, teacher, labels, ignore_index, c.aux_weight, c.ohem_thresh,
                             c.min_kept_ratio, weights, c.selection)
