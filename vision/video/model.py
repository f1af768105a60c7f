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
    the spec's CPU-sized config (a 4-layer ConvNet, 2 Transformer layers), narrowed to what one CPU
    core pre-trains in a minute."""

    dim: int = 32  # the per-frame feature and token width (paper: 256)
    cnn_width: int = 8  # channels of the first conv layer (doubled twice)
    layers: int = 2
    heads: int = 4
    dropout: float = 0.0  # spec (ours): 0.1; dropout noise between a clip and its shuffled copy buried
    # the small order signal early in pre-training (the CPU-sized model then often stayed order-blind)
    head_hidden: int = 16
    max_frames: int = 32  # position embeddings for clips up to this length
    # (ours, not in the spec) the Transformer sees each frame's feature minus the clip's mean over
    # time: static appearance (identity, background) dominates raw per-frame features (~90% of
    # their variation here), which left the small model's CLS nearly order-blind after CPU-sized
    # pre-training; the mean is order-free, so order still enters through the position embeddings only
    centre: bool = True

    def __post_init__(self) -> None:
        for name in ("dim", "cnn_width", "layers", "heads", "head_hidden", "max_frames"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise BadInputError(f"dim ({self.dim}) must be divisible by heads, got {self.heads}")
        if not 0 <= self.dropout < 1:
            raise BadInputError(f"dropout must be in [0, 1), got {self.dropout}")


def sinusoids(length: int, dim: int) -> torch.Tensor:
    """(length, dim) sinusoidal position codes of unit amplitude (the learnable embeddings' init):
    neighbouring frames get similar codes, so attention to the next frame is easy to learn. A small
    random init (ViT's 0.02) left the CPU-sized model order-blind."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(-torch.arange(0, dim, 2, dtype=torch.float32) * (torch.log(torch.tensor(100.0)) / dim))
    codes = torch.zeros(length, dim)
    codes[:, 0::2], codes[:, 1::2] = torch.sin(position * freq), torch.cos(position * freq)[:, :dim // 2]
    return codes


def spatial_cnn(width: int, dim: int) -> nn.Sequential:
    """A 4-layer ConvNet per frame (BatchNorm over batch x time), pooled to 4x4, Linear to ``dim``."""
    widths = [3, width, 2 * width, 2 * width, 4 * width]
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
        layers += [nn.Conv2d(cin, cout, 3, stride=2 if i % 2 else 1, padding=1, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU(inplace=True)]
    # a coarse 4x4 layout, not a global average: the mouth and eyes move a few pixels per frame and
    # a global pool all but averages that away; BatchNorm over batch x time on the features
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * widths[-1], dim),
                         nn.BatchNorm1d(dim))


def mlp(din: int, hidden: int, dout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(din, hidden), nn.GELU(), nn.Linear(hidden, dout))


class ClipEncoder(nn.Module):
    """Clips (B, T, 3, H, W) -> per-frame features f (B, T, D) -> Transformer outputs H (B, T + 1, D)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.spatial = spatial_cnn(config.cnn_width, config.dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, config.dim))
        # learnable, initialised non-zero (sinusoids of the normalised tokens' scale)
        self.position = nn.Parameter(sinusoids(config.max_frames + 1, config.dim)[None])
        self.centre = config.centre
        self.token_norm = nn.LayerNorm(config.dim)
        layer = nn.TransformerEncoderLayer(config.dim, config.heads, 2 * config.dim, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.temporal = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)

    def encode_frames(self, clips: torch.Tensor) -> torch.Tensor:
        """f: the spatial feature of every frame, (B, T, D)."""
        b, t = clips.shape[:2]
        return self.spatial(clips.flatten(0, 1)).view(b, t, -1)

    def contextualise(self, tokens: torch.Tensor) -> torch.Tensor:
        """H = Transformer([CLS; LayerNorm(tokens - their mean over time)] + position embeddings), (B, T + 1, D)."""
        b, t, _ = tokens.shape
        if self.centre:  # each frame's deviation from the clip's mean over time (order-free)
            tokens = tokens - tokens.mean(1, keepdim=True)
        x = torch.cat([self.cls.expand(b, -1, -1), self.token_norm(tokens)], dim=1) + self.position[:, :t + 1]
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

    name = "supervised"
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
