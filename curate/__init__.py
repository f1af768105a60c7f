"""Data selection: score datasets and keep what is worth training on (LearnAlign, CodeACT/CDAS)."""

__version__ = "0.1.0"
