"""Video: clips of frames (T, C, H, W). Face-forgery detection learns what natural video looks
like from real clips only, so that forgeries of kinds never seen in training stand out."""
