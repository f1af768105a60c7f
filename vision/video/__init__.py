"""Video: clips of frames (T, C, H, W). Face-forgery detection learns what natural video looks
like from real clips only, so that forgeries of kinds never seen in training stand out.

:mod:`vision.video.faces` (procedural face videos and four forgery kinds), :mod:`vision.video.model`
(the per-frame CNN + temporal Transformer, the method base and the supervised baseline),
:mod:`vision.video.naco` (NACO), :mod:`vision.video.experiment` (the config and runner: stages,
checkpoints, AUC on seen and unseen forgery kinds)."""
