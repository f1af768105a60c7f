"""Federated learning under label-distribution skew: K clients hold disjoint, label-skewed parts of
the training split; each round a seeded sample of them trains the global model locally and the
server averages the results (FedAvg, weighted by local data size).

- :mod:`vision.federated.partition`: the authors-style class-shard sharder, a seeded Dirichlet
  partition, the majority split M_k and the client-split summary;
- :mod:`vision.federated.base`: the shared pieces of every method and both drivers
  (:class:`FederatedMethod`, the masked distillation targets, ``local_train``, ``fedavg``,
  ``sample_clients``, ``evaluate``);
- methods, one module each: ``fedavg`` (CE), ``fedntd`` (not-true distillation), ``fedlmd``
  (label-masking distillation), ``fedlmd_tf`` (its teacher-free variant);
- :mod:`vision.federated.experiment`: the experiment config and the default pure-PyTorch
  in-process driver (per-round checkpoints, resume after a crash);
- :mod:`vision.federated.flower`: the same rounds as a Flower ``ServerApp`` (Flower's own FedAvg
  strategy) and ``ClientApp`` under ``flwr.simulation.run_simulation`` (Ray).
"""
