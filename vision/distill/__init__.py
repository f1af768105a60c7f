"""Knowledge distillation: a student learns from a trained, frozen teacher.

The family's protocol (:mod:`vision.distill.experiment`): a teacher is trained first on the
training split (or loaded from ``teacher_weights``), frozen and put in eval mode; the student is a
:class:`vision.distill.base.Distiller` run by :func:`vision.train.fit`, whose loss sees the
teacher's logits of the same augmented batch. The shared loss is :func:`vision.distill.kd.softmax_kd`
(Hinton et al.'s temperature-scaled KL, written out in its docstring). Members: ``kd`` (the plain
KD baseline), ``dhkd`` (:mod:`vision.distill.dhkd`: dual-head KD, a logit-level BinaryKL-Norm on an
auxiliary head, optional gradient alignment through :meth:`vision.train.Method.backward`); the
student alone (cross-entropy) is the other baseline. Two members have their own protocol (their
experiment config and runner in the registry): ``rdd`` (:mod:`vision.distill.rdd`, segmentation on
procedural shape scenes, :mod:`vision.distill.segmentation`) and ``dpdfd``
(:mod:`vision.distill.dpdfd`, data-free and differentially private: a generator, sanitised output
gradients, the Opacus accountant in :mod:`vision.distill.dp`).
"""
