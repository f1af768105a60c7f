"""Learning from crowds: several annotators label each sample, sparsely.

The family's protocol (:mod:`vision.crowds.experiment`): the true labels of the training set are
kept apart (metrics only); a simulated crowd (:mod:`vision.crowds.annotators`: per-annotator
confusion matrices, independent or correlated, Beta-sparse assignment) labels each instance with a
few of many annotators; the method sees the N x R annotation matrix (-1: not labelled) through
:func:`vision.train.fit`'s ``Batch.labels`` and reports the last epoch's test accuracy (no model
selection on clean labels). Members: ``ccc`` (CCC), ``aidtm`` (AIDTM); baselines ``mv`` (majority vote + CE) and
``crowdlayer`` (CrowdLayer, CCC's warm-up).
"""
