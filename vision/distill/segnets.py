"""Small fully convolutional segmentation networks for CPU-sized scenes.

:class:`SegFCN` is a DeepLab-like net in miniature: a stem at full resolution, one stride-2 stage
(the auxiliary head's input, as DeepLab's aux FCN head reads an intermediate stage), two dilated
stages, a 1x1 classifier, and bilinear upsampling (align_corners=True) back to the input size. It
returns ``{'out': logits}``, plus ``'aux'`` when built with an auxiliary head, the same dict as
torchvision's segmentation models. The teacher is a wide one with an aux head, the student a
narrow one. [assumed] torchvision's ``deeplabv3_mobilenet_v3_large`` (11M parameters, output stride
16, i.e. 2x2 feature maps on 32x32 scenes) costs about 0.27 s per batch of 16 on one core here,
too slow and too coarse for the offline benchmark, so it is not used.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=True, as the authors' losses) to ``size``; a no-op at that size."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size, mode="bilinear", align_corners=True)


class SegFCN(nn.Module):
    def __init__(self, classes: int, width: int = 16, aux: bool = False, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(_block(in_channels, width), _block(width, width))
        self.stage2 = nn.Sequential(_block(width, 2 * width, stride=2), _block(2 * width, 2 * width))
        self.stage3 = nn.Sequential(_block(2 * width, 2 * width, dilation=2), _block(2 * width, 2 * width, dilation=4))
        self.classifier = nn.Conv2d(2 * width, classes, 1)
        self.aux = nn.Sequential(_block(2 * width, width), nn.Conv2d(width, classes, 1)) if aux else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        middle = self.stage2(self.stem(x))
        out = {"out": upsample(self.classifier(self.stage3(middle)), size)}
        if self.aux is not None:
            out["aux"] = upsample(self.aux(middle), size)
        return out
