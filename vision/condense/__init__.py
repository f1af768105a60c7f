"""Dataset condensation: a few learnable synthetic images per class, optimised so that a network
trained on them alone does as a network trained on the real set would (Zhao & Bilen's DM, ECHO/M3D,
DANCE). Shared pieces: :mod:`.augment` (DSA-style augmentation, one draw per batch), :mod:`.base`
(the method interface, synthetic set, class-wise sampler, random ConvNets), :mod:`.evaluate` (the
evaluation protocol), :mod:`.experiment` (config, loop with checkpoints, saved outputs, runner)."""
