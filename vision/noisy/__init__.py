"""Learning with noisy labels: every training sample carries one (possibly wrong) label.

The family's protocol is :class:`vision.train.Method` run by :func:`vision.train.fit`: after warmup
a method chooses the samples it trusts at the start of each epoch (``select``) and defines the
batch loss (``loss``), with its own trainable modules (``modules``) and random generators. Label
noise is injected by :mod:`vision.noise` (symmetric, pair-flip, instance-dependent); the clean
labels, kept apart, give the selection's precision and recall. Members: ``selcl`` (Sel-CL),
``dpc`` (DPC); the baseline is ``ce`` (cross-entropy on every label).
"""
