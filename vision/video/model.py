"""The video family's network and method base: a per-frame CNN spatial encoder, a Transformer
temporal encoder over one token per frame (a CLS token, learnable position embeddings initialised
non-zero), and an MLP real/fake head on the CLS output.

A method (:class:`VideoMethod`) builds a :class:`VideoModel` and lists its training
:class:`Stage`\\ s (which clips, which parameters, which modules in train mode, the batch loss);
the experiment (:mod:`vision.video.experiment`) runs the stages, checkpoints and scores.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from curate.core.errors import BadInputError


@dataclass
class ModelConfig:
    """The network's size. Spec (verified): per-frame CNN features of dimension 256 as Transformer
    tokens; (ours) 4 layers, 8 heads, pre-LN, dropout 0.1, head 256 -> 128 -> 1. The defaults here are
    the spec's CPU-sized config (a 4-layer ConvNet, 2 Transformer layers)."""

    dim: int = 64  # the per-frame feature and token width (paper: 256)
    cnn_width: int = 16  # channels of the first conv layer (doubled twice)
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    head_hidden: int = 32
    max_frames: int = 32  # position embeddings for clips up to this length

    def __post_init__(self) -> None:
        for name in ("dim", "cnn_width", "layers", "heads", "head_hidden", "max_frames"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise BadInputError(f"dim ({self.dim}) must be divisible by heads, got {self.heads}")
        if not 0 <= self.dropout < 1:
            raise BadInputError(f"dropout must be in [0, 1), got {self.dropout}")


def spatial_cnn(width: int, dim: int) -> nn.Sequential:
    """A 4-layer ConvNet per frame (BatchNorm over batch x time), global average pool, Linear to ``dim``."""
    widths = [3, width, 2 * width, 2 * width, 4 * width]
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
        layers += [nn.Conv2d(cin, cout, 3, stride=2 if i % 2 else 1, padding=1, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], dim))


def mlp(din: int, hidden: int, dout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(din, hidden), nn.GELU(), nn.Linear(hidden, dout))


class ClipEncoder(nn.Module):
    """Clips (B, T, 3, H, W) -> per-frame features f (B, T, D) -> Transformer outputs H (B, T + 1, D)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.spatial = spatial_cnn(config.cnn_width, config.dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.position = nn.Parameter(torch.randn(1, config.max_frames + 1, config.dim) * 0.02)  # non-zero
        layer = nn.TransformerEncoderLayer(config.dim, config.heads, 2 * config.dim, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.temporal = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)

    def encode_frames(self, clips: torch.Tensor) -> torch.Tensor:
        """f: the spatial feature of every frame, (B, T, D)."""
        b, t = clips.shape[:2]
        return self.spatial(clips.flatten(0, 1)).view(b, t, -1)

    def contextualise(self, tokens: torch.Tensor) -> torch.Tensor:
        """H = Transformer([CLS; tokens] + position embeddings), (B, T + 1, D)."""
        b, t, _ = tokens.shape
        x = torch.cat([self.cls.expand(b, -1, -1), tokens], dim=1) + self.position[:, :t + 1]
        return self.norm(self.temporal(x))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """h_cls, the clip's representation, (B, D)."""
        return self.contextualise(self.encode_frames(clips))[:, 0]


class VideoModel(nn.Module):
    """The backbone (:class:`ClipEncoder`), the real/fake head, and a method's extra modules."""

    def __init__(self, config: ModelConfig, extra: dict[str, nn.Module] | None = None):
        super().__init__()
        self.backbone = ClipEncoder(config)
        self.head = mlp(config.dim, config.head_hidden, 1)
        self.extra = nn.ModuleDict(extra or {})

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Real/fake logits (B,): > 0 leans fake."""
        return self.head(self.backbone(clips)).squeeze(-1)


@dataclass
class Stage:
    """One training stage: ``data`` 'real' (real training clips only, unlabelled) or 'labelled'
    (the head's set); ``parameters`` the optimised ones; ``modes`` puts the modules in train/eval
    mode (called every epoch); ``loss(model, clips, labels, generator)`` the batch loss."""

    name: str
    data: str
    epochs: int
    lr: float
    parameters: Callable[[VideoModel], list[nn.Parameter]]
    modes: Callable[[VideoModel], None]
    loss: Callable[[VideoModel, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def detection_loss(model: VideoModel, clips: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """BCE of the real/fake logits (label 1: fake)."""
    return nn.functional.binary_cross_entropy_with_logits(model(clips), labels)


class VideoMethod:
    """A video method: its network and its stages; the base is the end-to-end supervised detector."""

    name = "video_supervised"
    config_class: type | None = ModelConfig

    def __init__(self, config: ModelConfig | None = None):
        self.config = config or self.config_class()

    def identity(self) -> str:
        return repr(self.config)

    def build(self, seed: int) -> VideoModel:
        torch.manual_seed(seed)
        return VideoModel(self.config)

    def stages(self, train) -> list[Stage]:
        """The supervised baseline: the whole network trained with BCE on the labelled clips."""
        return [Stage("supervised", "labelled", train.finetune_epochs, train.lr, lambda m: list(m.parameters()),
                      lambda m: m.train(), detection_loss)]
