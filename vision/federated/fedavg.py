"""FedAvg (McMahan et al. 2017), the baseline: clients minimise cross-entropy on their own data,
the server averages the returned weights by local data size. The objective is
:class:`vision.federated.base.FederatedMethod`'s own; this module names it as a method."""
from __future__ import annotations

from vision.federated.base import FederatedMethod


class FedAvg(FederatedMethod):
    name = "fedavg"
