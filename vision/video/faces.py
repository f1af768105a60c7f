"""Procedural face videos, offline and seeded: real clips with natural spatio-temporal consistency
and four forgery kinds that each break it differently (the NACO spec's synthetic protocol).

A clip is a float tensor (T, 3, S, S) in [0, 1]. A *real* clip: an elliptic head with identity
parameters (skin tone, face width, eye spacing, eye and mouth size) on a static textured
background; smooth head motion (translation, rotation, scale: each a sum of low-frequency
sinusoids); a smooth blink; a mouth opening driven by a smooth "speech" signal that also drops the
jaw (the chin follows the mouth); a slow illumination drift; faint sensor noise.

Forgeries (one clip each, of a fresh identity):

- ``swap``: the inner face of another identity pasted with a soft seam, its alignment jittered
  independently per frame;
- ``reenact``: the mouth driven by another video's speech signal while the jaw follows the
  clip's own (lip/jaw mismatch);
- ``flicker``: per-frame independent colour and texture noise in the face region;
- ``temporal``: dropped and duplicated frames plus a small per-frame warp (sub-pixel shift).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from curate.core.errors import BadInputError

KINDS = ("swap", "reenact", "flicker", "temporal")


@dataclass
class ClipsConfig:
    """How many clips of which kinds; the frame size is the experiment's ``image_size``."""

    frames: int = 8  # T per clip (one clip per video)
    real_train: int = 128  # real clips: pre-training (all) and the head's real class
    fake_train: int = 64  # per seen kind, for the head (and the supervised baseline)
    test: int = 96  # real test clips, and test clips per kind
    seen: tuple[str, ...] = ("swap", "reenact")  # the head's fake kinds
    unseen: tuple[str, ...] = ("flicker", "temporal")  # test only

    def __post_init__(self) -> None:
        if self.frames < 4:
            raise BadInputError(f"frames must be at least 4, got {self.frames}")
        for name in ("real_train", "fake_train", "test"):
            if getattr(self, name) < 2:
                raise BadInputError(f"{name} must be at least 2, got {getattr(self, name)}")
        for name in ("seen", "unseen"):
            bad = [k for k in getattr(self, name) if k not in KINDS]
            if bad:
                raise BadInputError(f"{name}: unknown forgery kind '{bad[0]}'; choose from {', '.join(KINDS)}")
        if not self.seen:
            raise BadInputError("seen must name at least one forgery kind")
        if set(self.seen) & set(self.unseen):
            raise BadInputError(f"seen and unseen share {sorted(set(self.seen) & set(self.unseen))}")


@dataclass
class Face:
    """One identity and one performance: what a real clip is rendered from."""

    skin: np.ndarray  # (3,)
    width: float  # head half-width over half-height
    eye_gap: float
    eye_size: float
    mouth_width: float
    background: np.ndarray  # (3, S, S)
    motion: np.ndarray  # (T, 4): dx, dy (pixels), angle (rad), scale
    blink: np.ndarray  # (T,) eye openness in [0, 1]
    speech: np.ndarray  # (T,) mouth openness in [0, 1]
    light: np.ndarray  # (T,) illumination gain
    extra: dict = field(default_factory=dict)


def _smooth(rng: np.random.Generator, t: np.ndarray, amplitude: float, waves: int = 3) -> np.ndarray:
    """A sum of ``waves`` low-frequency sinusoids (periods of 1.5 to 6 clips of 16 frames)."""
    freq = rng.uniform(1 / 96, 1 / 24, waves)
    phase = rng.uniform(0, 2 * np.pi, waves)
    weight = rng.uniform(0.5, 1.0, waves)
    return amplitude * (weight[:, None] * np.sin(2 * np.pi * freq[:, None] * t + phase[:, None])).sum(0) / weight.sum()


def draw_face(rng: np.random.Generator, frames: int, size: int, t: np.ndarray | None = None) -> Face:
    """A random identity and performance, sampled at times ``t`` (default 0..frames-1)."""
    t = np.arange(frames, dtype=np.float64) if t is None else t
    start = rng.uniform(0, 200)  # where in a long video the clip starts
    t = t + start
    yy, xx = np.mgrid[0:size, 0:size] / size
    tone = rng.uniform(0.15, 0.85, 3)
    background = tone[:, None, None] * (0.6 + 0.4 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx
                                                                         + rng.uniform(0.5, 2) * yy
                                                                         + rng.uniform(0, 1)))[None])
    blink = np.ones_like(t)
    for centre in rng.uniform(t[0] - 4, t[-1] + 4, rng.integers(0, 3)):
        blink -= 0.95 * np.exp(-0.5 * ((t - centre) / 0.8) ** 2)
    speech = np.clip(0.45 + _smooth(rng, t * 4, 0.9), 0, 1)  # faster than the head motion
    motion = np.stack([_smooth(rng, t, 0.1 * size), _smooth(rng, t, 0.08 * size), _smooth(rng, t, 0.25),
                       1 + _smooth(rng, t, 0.08)], axis=1)
    return Face(skin=np.clip(rng.normal([0.85, 0.65, 0.5], 0.1), 0.2, 1.0), width=rng.uniform(0.72, 0.92),
                eye_gap=rng.uniform(0.3, 0.45), eye_size=rng.uniform(0.14, 0.2), mouth_width=rng.uniform(0.28, 0.42),
                background=np.clip(background, 0, 1), motion=motion, blink=np.clip(blink, 0.05, 1), speech=speech,
                light=1 + _smooth(rng, t, 0.12, waves=2))


def _soft(inside: np.ndarray, sharpness: float = 12.0) -> np.ndarray:
    """A soft indicator of ``inside > 0`` (an anti-aliased edge)."""
    return 1 / (1 + np.exp(np.clip(-sharpness * inside, -50, 50)))


def _coords(face: Face, size: int, jitter: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Face coordinates (u, v) of every pixel per frame, (T, S, S): the head ellipse has radius ~1."""
    motion = face.motion if jitter is None else face.motion + jitter
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c = (size - 1) / 2
    x = xx[None] - c - motion[:, 0, None, None]
    y = yy[None] - c - motion[:, 1, None, None]
    cos, sin = np.cos(motion[:, 2])[:, None, None], np.sin(motion[:, 2])[:, None, None]
    radius = 0.33 * size * motion[:, 3, None, None]
    return (cos * x + sin * y) / radius, (-sin * x + cos * y) / radius


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv, ru: float, rv) -> np.ndarray:
    return 1 - ((u - cu) / ru) ** 2 - ((v - cv) / rv) ** 2


def render(face: Face, size: int, jaw: np.ndarray | None = None, inner: Face | None = None,
           jitter: np.ndarray | None = None) -> np.ndarray:
    """The clip of ``face`` (T, 3, S, S) in [0, 1]. ``jaw``: the signal the chin follows (default the
    mouth's own); ``inner``: an identity whose inner face replaces this one's (``jitter``: its
    per-frame alignment offsets, (T, 4))."""
    u, v = _coords(face, size)
    jaw = face.speech if jaw is None else jaw
    chin = 1.0 + 0.18 * jaw[:, None, None]  # the lower half of the head drops with the jaw
    head = _soft(_ellipse(u, v, 0, 0, face.width, np.where(v > 0, chin, 1.0)))
    out = face.background[None] * (1 - head[:, None]) + head[:, None] * _face_layer(face, u, v, jaw)
    if inner is not None:
        iu, iv = _coords(face, size, jitter)
        seam = _soft(_ellipse(iu, iv, 0, 0.1, 0.62, 0.72), 6.0)[:, None]  # a soft blend seam
        swapped = _face_layer(inner, iu, iv, face.speech, blink=face.blink, speech=face.speech)
        out = out * (1 - seam) + swapped * seam
    out = out * face.light[:, None, None, None]
    return np.clip(out, 0, 1)


def _face_layer(face: Face, u: np.ndarray, v: np.ndarray, jaw: np.ndarray, blink: np.ndarray | None = None,
                speech: np.ndarray | None = None) -> np.ndarray:
    """Skin with eyes and mouth, (T, 3, S, S), before the head mask."""
    blink = face.blink if blink is None else blink
    speech = face.speech if speech is None else speech
    shade = 1 - 0.12 * (u ** 2 + v ** 2)  # rounded-face shading
    layer = face.skin[None, :, None, None] * shade[:, None]
    eye_h = face.eye_size * 0.7 * blink[:, None, None]
    eyes = np.maximum(_soft(_ellipse(u, v, -face.eye_gap, -0.25, face.eye_size, eye_h), 20),
                      _soft(_ellipse(u, v, face.eye_gap, -0.25, face.eye_size, eye_h), 20))
    mouth_v = 0.42 + 0.1 * jaw[:, None, None]
    mouth = _soft(_ellipse(u, v, 0, mouth_v, face.mouth_width, 0.03 + 0.16 * speech[:, None, None]), 20)
    layer = layer * (1 - eyes[:, None]) + np.array([0.08, 0.06, 0.05])[None, :, None, None] * eyes[:, None]
    return layer * (1 - mouth[:, None]) + np.array([0.45, 0.1, 0.12])[None, :, None, None] * mouth[:, None]


def real_clip(rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
    face = draw_face(rng, frames, size)
    return _noise(rng, render(face, size), 0.01)


def _noise(rng: np.random.Generator, clip: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(clip + rng.normal(0, sigma, clip.shape), 0, 1)


def fake_clip(rng: np.random.Generator, kind: str, frames: int, size: int) -> np.ndarray:
    """A forgery of ``kind`` (see the module docstring)."""
    if kind == "swap":
        face, donor = draw_face(rng, frames, size), draw_face(rng, frames, size)
        jitter = np.zeros((frames, 4))
        jitter[:, :2] = rng.normal(0, 0.04 * size, (frames, 2))  # independent per frame
        jitter[:, 3] = rng.normal(0, 0.04, frames)
        clip = render(face, size, inner=donor, jitter=jitter)
    elif kind == "reenact":
        face, driver = draw_face(rng, frames, size), draw_face(rng, frames, size)
        jaw = face.speech  # the chin keeps the original performance; the mouth follows the driver
        face.speech = driver.speech
        clip = render(face, size, jaw=jaw)
    elif kind == "flicker":
        face = draw_face(rng, frames, size)
        clip = render(face, size)
        u, v = _coords(face, size)
        region = _soft(_ellipse(u, v, 0, 0, face.width, 1.1))[:, None]
        colour = rng.normal(0, 0.07, (frames, 3, 1, 1))
        texture = rng.normal(0, 0.06, clip.shape)
        clip = clip + region * (colour + texture)
    elif kind == "temporal":
        steps = np.ones(frames - 1)
        changed = rng.choice(frames - 1, size=max(1, (frames - 1) // 3), replace=False)
        steps[changed] = rng.choice([0.0, 2.0, 3.0], size=len(changed))  # duplicated or dropped frames
        t = np.concatenate([[0.0], np.cumsum(steps)])
        face = draw_face(rng, frames, size, t=t)
        face.motion[:, :2] += rng.normal(0, 0.03 * size, (frames, 2))  # a small per-frame warp
        clip = render(face, size)
    else:
        raise BadInputError(f"unknown forgery kind '{kind}'; choose from {', '.join(KINDS)}")
    return _noise(rng, np.clip(clip, 0, 1), 0.01)


@dataclass
class VideoData:
    """Clips (N, T, 3, S, S) with labels (1: fake) and kinds ('real' or a forgery kind)."""

    real_train: torch.Tensor
    train_clips: torch.Tensor  # the head's (and the supervised baseline's) labelled training clips
    train_labels: torch.Tensor
    train_kinds: list[str]
    test_clips: torch.Tensor
    test_labels: torch.Tensor
    test_kinds: list[str]
    name: str = "faces"


def _stack(clips: list[np.ndarray]) -> torch.Tensor:
    return torch.as_tensor(np.stack(clips), dtype=torch.float32)


def face_videos(config: ClipsConfig, size: int, seed: int) -> VideoData:
    """The seeded data of an experiment: real training clips (for pre-training and the head), the
    head's labelled set (real + seen kinds) and the test set (real + every kind)."""
    if size < 16:
        raise BadInputError(f"image_size must be at least 16 for face videos, got {size}")

    def draw(part: str, kind: str, count: int) -> list[np.ndarray]:
        rng = np.random.default_rng([seed, KINDS.index(kind) + 1 if kind in KINDS else 0, {"train": 0, "test": 1}[part]])
        make = (lambda: real_clip(rng, config.frames, size)) if kind == "real" \
            else (lambda: fake_clip(rng, kind, config.frames, size))
        return [make() for _ in range(count)]

    real = draw("train", "real", config.real_train)
    fakes = {k: draw("train", k, config.fake_train) for k in config.seen}
    train_kinds = ["real"] * len(real) + [k for k in config.seen for _ in range(config.fake_train)]
    test_parts = {"real": draw("test", "real", config.test),
                  **{k: draw("test", k, config.test) for k in (*config.seen, *config.unseen)}}
    test_kinds = [k for k, clips in test_parts.items() for _ in clips]
    real_train = _stack(real)
    return VideoData(real_train, torch.cat([real_train, _stack([c for k in config.seen for c in fakes[k]])]),
                     torch.tensor([k != "real" for k in train_kinds], dtype=torch.float32), train_kinds,
                     _stack([c for clips in test_parts.values() for c in clips]),
                     torch.tensor([k != "real" for k in test_kinds], dtype=torch.float32), test_kinds,
                     f"faces{size}x{config.frames}")
