"""The Flower driver: the same rounds as :func:`vision.federated.experiment.run_inprocess`, as a
Flower ``ServerApp`` (Flower's own ``flwr.serverapp.strategy.FedAvg``, which averages the
clients' ``ArrayRecord``s weighted by their ``"num-examples"``) and a ``ClientApp`` that runs
:func:`vision.federated.experiment.train_client`, under ``flwr.simulation.run_simulation`` (one
virtual SuperNode per client, on Ray).

FedLMD needs no custom strategy; the one subclass, :class:`RoundSampledFedAvg`, only replaces
Flower's sampler (``random.sample`` over random 64-bit node ids) by the in-process driver's
(seeded by the round), so both drivers train the same clients; it learns each node's
``partition-id`` with one ``query`` message first. The server sends ``lr`` and ``gamma`` in the
train config, and the client derives its round's lr from ``server-round``. Each client computes
its majority classes M_k from its own labels (label counts never leave it). With
``checkpoint_dir`` the server saves the global weights and history after every round (in its
centralised evaluation) and a rerun resumes from the last round saved.

For a real federation use the same apps with ``flwr run`` (a SuperLink and one SuperNode per site,
``--node-config "partition-id=... num-partitions=..."``); that path is not exercised here.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import time
from typing import Any

from curate.core.errors import BadInputError


def _flower():
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # offline: no usage telemetry
    missing = [name for name in ("flwr", "ray") if importlib.util.find_spec(name) is None]
    if missing:
        raise BadInputError(f"driver flower needs {' and '.join(missing)}: pip install 'flwr[simulation]'")


def make_client_app(method: Any, config: Any, federation: Any):
    """The ClientApp: ``train`` runs one client's round; ``query`` answers its partition-id."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from vision.federated.experiment import _model, train_client
    from vision.federated.partition import class_counts, majority_classes

    data, parts = federation.data, federation.parts
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Any) -> Message:
        import torch

        torch.set_num_threads(1)
        pid = int(context.node_config["partition-id"])
        settings = msg.content["config"]
        round_ = int(settings["server-round"]) - 1 + int(settings["round-offset"])
        local = dataclasses.replace(config.train, lr=float(settings["lr"]), gamma=float(settings["gamma"]))
        model = _model(config, data)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        labels = data.train_labels.numpy()[parts[pid]]
        majority = majority_classes(class_counts(labels, data.num_classes))  # on the client
        outcome = train_client(model, method, data, parts[pid], majority, pid, round_, local)
        metrics = {"num-examples": outcome["n"], "client": pid, "train_loss": outcome["loss"],
                   **{k: outcome[k] for k in ("minority_accuracy", "majority_accuracy") if outcome[k] is not None}}
        return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(metrics)}),
                       reply_to=msg)

    @app.query()
    def query(msg: Message, context: Any) -> Message:
        return Message(RecordDict({"node": MetricRecord({"partition-id": int(context.node_config["partition-id"])})}),
                       reply_to=msg)

    return app


def _strategy_class():
    from flwr.serverapp.strategy import FedAvg

    class RoundSampledFedAvg(FedAvg):
        """Flower's FedAvg with the clients of each round drawn by
        :func:`vision.federated.base.sample_clients` (seeded by the round) instead of at random."""

        def __init__(self, node_of: dict[int, int], clients: int, ratio: float, seed: int, offset: int, **kwargs):
            super().__init__(**kwargs)
            self.node_of, self.clients, self.ratio, self.seed, self.offset = node_of, clients, ratio, seed, offset
            self.replies: dict[int, list[dict]] = {}

        def configure_train(self, server_round, arrays, config, grid):
            from flwr.app import Message, MessageType, RecordDict

            from vision.federated.base import sample_clients

            chosen = sample_clients(self.clients, self.ratio, server_round - 1 + self.offset, self.seed)
            config["server-round"] = server_round
            record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
            return [Message(content=record, message_type=MessageType.TRAIN, dst_node_id=self.node_of[k]) for k in chosen]

        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            self.replies[server_round] = [dict(next(iter(m.content.metric_records.values())))
                                          for m in replies if not m.has_error()]
            errors = [m.error.reason for m in replies if m.has_error()]
            if errors:
                raise RuntimeError(f"round {server_round}: a ClientApp failed: {errors[0]}")
            return super().aggregate_train(server_round, replies)

    return RoundSampledFedAvg


def make_server_app(method: Any, config: Any, federation: Any, outcome: dict[str, Any]):
    """The ServerApp: query the nodes' partition ids, run :class:`RoundSampledFedAvg` for the rounds
    not yet checkpointed, evaluate centrally each round; fills ``outcome`` (history, state)."""
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
    from flwr.serverapp import ServerApp

    from vision.federated.base import evaluate
    from vision.federated.experiment import _checkpoint_path, _model, round_lr, round_record
    from vision.train import kill_hook, save_checkpoint

    train, data, clients = config.train, federation.data, len(federation.parts)
    app = ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        while len(nodes := list(grid.get_node_ids())) < clients:
            time.sleep(0.2)
        replies = grid.send_and_receive([Message(RecordDict({"config": ConfigRecord({})}), message_type=MessageType.QUERY,
                                                 dst_node_id=n) for n in nodes])
        node_of = {int(r.content["node"]["partition-id"]): r.metadata.src_node_id for r in replies}
        model = _model(config, data)
        history, offset = [], 0
        checkpoint = _checkpoint_path(method, config, federation)
        if checkpoint is not None and checkpoint.exists():
            saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
            model.load_state_dict(saved["model"])
            history, offset = saved["history"], saved["round"] + 1
        m = max(int(clients * train.sample_ratio), 1)
        strategy = _strategy_class()(node_of, clients, train.sample_ratio, train.seed, offset,
                                     fraction_train=train.sample_ratio, fraction_evaluate=0.0, min_train_nodes=m,
                                     min_available_nodes=clients)
        began = [time.monotonic()]

        def central_eval(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            if server_round == 0:
                return None
            round_ = server_round - 1 + offset
            model.load_state_dict(arrays.to_torch_state_dict())
            local = [{"client": int(r["client"]), "n": int(r["num-examples"]), "loss": float(r["train_loss"]),
                      "minority_accuracy": r.get("minority_accuracy"), "majority_accuracy": r.get("majority_accuracy")}
                     for r in strategy.replies[server_round]]
            local.sort(key=lambda x: x["client"])
            history.append(round_record(round_, [x["client"] for x in local], round_lr(train, round_), local,
                                        evaluate(model, data.test_images, data.test_labels, data.num_classes),
                                        time.monotonic() - began[0]))
            began[0] = time.monotonic()
            if checkpoint is not None:
                save_checkpoint(checkpoint, {"model": model.state_dict(), "history": history, "round": round_})
                kill_hook(round_ + 1)
            return MetricRecord({"test_accuracy": history[-1]["test_accuracy"]})

        if offset < train.rounds:
            strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=train.rounds - offset,
                           train_config=ConfigRecord({"lr": train.lr, "gamma": train.gamma, "round-offset": offset,
                                                      "algo": method.name}),
                           evaluate_fn=central_eval)
        outcome["history"] = history
        outcome["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    return app


def run_flower(method: Any, config: Any, federation: Any) -> tuple[list, dict]:
    """(history, final global state_dict) from a Flower simulation of the configured rounds."""
    _flower()
    import torch
    from flwr.simulation import run_simulation

    from vision.federated.experiment import _checkpoint_path

    checkpoint = _checkpoint_path(method, config, federation)
    if checkpoint is not None and checkpoint.exists():  # every round done already: no simulation
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if saved["round"] + 1 >= config.train.rounds:
            return saved["history"], saved["model"]

    outcome: dict[str, Any] = {}
    run_simulation(server_app=make_server_app(method, config, federation, outcome),
                   client_app=make_client_app(method, config, federation), num_supernodes=len(federation.parts),
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": min(2, os.cpu_count() or 1), "log_to_driver": False}})
    if "state" not in outcome:
        raise RuntimeError("the Flower simulation ended without a result (see its log above)")
    return outcome["history"], outcome["state"]
