"""Multi-label learning: every sample carries a multi-hot target over q classes (noisy per class).

The family's data are digit mosaics (:mod:`vision.multilabel.mosaics`: 2x2 tiles of scikit-learn
digits, a 10-label multi-hot target, class-conditional flips with a known 2x2 T^j per class); its
loop is BCE over sigmoid outputs (:mod:`vision.multilabel.mltm`), apart from the single-label loop
of :mod:`vision.train`. Members: ``mltm`` (transition-matrix estimation with label correlations,
then Reweight; ``estimator: identity`` is the plain-BCE baseline).
"""
