"""CCC, Coupled Confusion Correction (Zhang et al., AAAI 2024), from the spec's reading of the
authors' code.

Two networks, each with CrowdLayer-MW confusions W (R x K x K, identity at init). Warm-up
(``train.warmup_epochs``): both trained as CrowdLayers. Then, at the start of every epoch, each
model's annotators are grouped by k-means on vec(W_r) and each model builds a distilled set (per
class c, the floor(M/K) instances some annotator labelled c with the smallest CE(f(x), c)). Per
batch, each model's confusion correction comes from a one-step look-ahead on the PEER's distilled
set: eps (G x K x K, 0, shared by a group) enters L(theta, W + eps[g(r)]); a plain SGD step at the
current lr that keeps the second-order graph only through the last ``num_act`` parameter tensors;
g = d CE(f_theta'(x_meta), y_meta) / d eps at 0; eps* = -rate * max(W') / max|g| * g with W' the
pseudo-updated W; the real step uses W + eps*[g(r)] (detached, recomputed every batch). Test
prediction: softmax(f_1) + softmax(f_2).

Optional fine-tune (``finetune_epochs`` > 0; the code's ``epoch_ft``, off by default as there):
after training, the distilled sets are rebuilt from the final networks and each model is trained
by cross-entropy on its PEER's set, SGD (momentum 0.9) at ``finetune_lr`` (the code: 1e-4) for
``finetune_epochs`` epochs (the code runs epoch_ft squared); the result's ``final`` is then the
fine-tuned ensemble and ``finetune`` records both accuracies.

Toolkit choices: the shared loop's SGD with a cosine schedule (the code: MultiStepLR at 30);
distilled candidates are unique instances (the code repeats an instance once per vote); k-means
seeded by the run's seed.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from curate.core.errors import BadInputError
from vision.crowds.annotators import Confusions, Crowd, CrowdMethod, crowd_loss, implied_confusion
from vision.backbones import reinitialised_copy
from vision.train import Batch, predict


@dataclass
class CCCConfig:
    groups: int = 30  # k-means groups of annotators (nb_group)
    meta_size: int = 1000  # distilled set size M (M // K per class)
    meta_batch: int = 128
    correction_rate: float = 0.5  # crct_rate
    num_act: int = 2  # last parameter tensors that carry the meta-gradient (final weight, bias)
    finetune_epochs: int = 0  # CE on the peer's distilled set after training (0: off, the code's -1)
    finetune_lr: float = 1e-4

    def __post_init__(self) -> None:
        for name in ("groups", "meta_size", "meta_batch", "num_act"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.correction_rate < 0:
            raise BadInputError(f"correction_rate must be non-negative, got {self.correction_rate}")
        if self.finetune_epochs < 0:
            raise BadInputError(f"finetune_epochs must be non-negative, got {self.finetune_epochs}")
        if self.finetune_lr <= 0:
            raise BadInputError(f"finetune_lr must be positive, got {self.finetune_lr}")


Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def lookahead(net: nn.Module, weight: torch.Tensor, x: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor,
              meta_x: torch.Tensor, meta_y: torch.Tensor, lr: float, num_act: int) -> Objective:
    """eps -> (meta loss after one pseudo SGD step with confusions W + eps[groups], pseudo-updated W)."""
    params = dict(net.named_parameters())
    head = set(list(params)[-num_act:])

    def objective(eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = crowd_loss(functional_call(net, params, (x,)), weight + eps[groups], labels)
        grads = torch.autograd.grad(loss, [*params.values(), weight], create_graph=True)
        stepped = {name: p.detach() - lr * (g if name in head else g.detach())
                   for (name, p), g in zip(params.items(), grads)}
        meta = nn.functional.cross_entropy(functional_call(net, stepped, (meta_x,)).float(), meta_y)
        return meta, (weight - lr * grads[-1]).detach()

    return objective


def correction(objective: Objective, num_groups: int, weight: torch.Tensor, rate: float) -> torch.Tensor:
    """eps* (G x K x K): the meta-gradient at eps = 0, negated, its largest entry scaled to
    ``rate`` times the signed maximum of the pseudo-updated W."""
    eps = torch.zeros(num_groups, *weight.shape[1:], device=weight.device, requires_grad=True)
    meta, pseudo_weight = objective(eps)
    (grad,) = torch.autograd.grad(meta, eps)
    scale = rate * pseudo_weight.max() / grad.abs().max().clamp_min(1e-12)
    return (-scale * grad).detach()


def group_annotators(weight: torch.Tensor, groups: int, seed: int) -> torch.Tensor:
    """k-means (scikit-learn, seeded) group id of every annotator from its raw vec(W_r)."""
    from sklearn.cluster import KMeans

    points = weight.detach().float().cpu().reshape(len(weight), -1).numpy()
    clusters = min(groups, len(points))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # identical rows (annotators still at the identity) merge clusters
        ids = KMeans(n_clusters=clusters, n_init=10, random_state=seed).fit_predict(points)
    return torch.as_tensor(ids, dtype=torch.long, device=weight.device)


def finetune(net: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int,
             generator: torch.Generator) -> None:
    """Cross-entropy on (x, y) for ``epochs`` epochs, SGD with momentum 0.9, seeded batch order."""
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    net.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(y), generator=generator).split(batch_size):
            rows = rows.to(y.device)
            loss = nn.functional.cross_entropy(net(x[rows]).float(), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def distilled_set(logits: torch.Tensor, labels: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, labels): per class c, the size // K instances some annotator labelled c with the
    smallest CE(logits, c); an instance may enter several classes."""
    num_classes = logits.shape[1]
    log_p = logits.float().log_softmax(1)
    rows, ys = [], []
    for c in range(num_classes):
        candidates = (labels == c).any(1).nonzero(as_tuple=True)[0]
        keep = -log_p[candidates, c]
        chosen = candidates[keep.topk(min(size // num_classes, len(candidates)), largest=False).indices]
        rows.append(chosen)
        ys.append(torch.full_like(chosen, c))
    return torch.cat(rows), torch.cat(ys)


class CCC(CrowdMethod):
    name = "ccc"
    config_class = CCCConfig

    def __init__(self, config: CCCConfig | None = None):
        self.config = config or CCCConfig()

    def modules(self, model: nn.Module, data) -> dict[str, nn.Module]:
        self.seed = torch.initial_seed()  # the run's seed (the loop seeded torch with it)
        self.model = model
        self.peer = reinitialised_copy(model, self.seed + 1)
        self.confusions = [Confusions(self.num_annotators, data.num_classes) for _ in range(2)]
        self.generator = torch.Generator().manual_seed(self.seed)
        self.groups: list[torch.Tensor] | None = None
        self.meta: list[tuple[torch.Tensor, torch.Tensor]] = []
        return {"peer": self.peer, "confusions1": self.confusions[0], "confusions2": self.confusions[1]}

    def generators(self) -> dict[str, torch.Generator]:
        return {"meta": self.generator}

    def select(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epoch: int) -> None:
        device = next(model.parameters()).device
        nets, self.meta = [model, self.peer], []
        self.groups = [group_annotators(c.weight, self.config.groups, self.seed) for c in self.confusions]
        for net in nets:
            rows, ys = distilled_set(predict(net, images).cpu(), labels, self.config.meta_size)
            self.meta.append((images[rows].to(device), ys.to(device), rows))
        return None

    def meta_batch(self, owner: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, _ = self.meta[owner]
        pick = torch.randperm(len(y), generator=self.generator)[:self.config.meta_batch].to(y.device)
        return x[pick], y[pick]

    def corrections(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, lr: float) -> list[torch.Tensor]:
        """Each model's C* (R x K x K) for this batch, from its PEER's distilled set."""
        out = []
        for m, net in enumerate((model, self.peer)):
            weight = self.confusions[m].weight
            meta_x, meta_y = self.meta_batch(1 - m)
            objective = lookahead(net, weight, x, labels, self.groups[m], meta_x, meta_y, lr, self.config.num_act)
            eps = correction(objective, int(self.groups[m].max()) + 1, weight, self.config.correction_rate)
            out.append(eps[self.groups[m]])
        return out

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        nets = (model, self.peer)
        if self.groups is None:  # warm-up: two CrowdLayers
            fixes = [0.0, 0.0]
        else:
            fixes = self.corrections(model, batch.weak, batch.labels, batch.lr)
        return sum(crowd_loss(net(batch.weak), c.weight + fix, batch.labels)
                   for net, c, fix in zip(nets, self.confusions, fixes))

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return predict(model, images).softmax(1) + predict(self.peer, images).softmax(1)

    def finish(self, data, labels: np.ndarray, train) -> dict | None:
        """The optional fine-tune stage (see the module docstring); None when it is off."""
        c = self.config
        if not c.finetune_epochs:
            return None
        accuracy = lambda: float((self.predict(self.model, data.test_images).argmax(1).cpu()  # noqa: E731
                                  == data.test_labels).float().mean())
        before = accuracy()
        self.select(self.model, data.train_images, torch.as_tensor(labels), epoch=-1)
        generator = torch.Generator().manual_seed(self.seed + 2)
        for m, net in enumerate((self.model, self.peer)):
            x, y, _ = self.meta[1 - m]  # the peer's distilled set
            finetune(net, x, y, c.finetune_epochs, c.finetune_lr, train.batch_size, generator)
        return {"epochs": c.finetune_epochs, "lr": c.finetune_lr, "test_accuracy_before": before,
                "test_accuracy": accuracy()}

    def crowd_metrics(self, truth: np.ndarray, crowd: Crowd) -> dict:
        out: dict = {}
        if self.meta:
            truth_t = torch.as_tensor(truth)
            out["distilled_label_accuracy"] = [float((truth_t[rows] == y.cpu()).float().mean())
                                               for _, y, rows in self.meta]
        busy = crowd.counts() >= 100
        if busy.any():
            estimate = implied_confusion(self.confusions[0].weight).cpu().numpy()[busy]
            out["confusion_row_l1_busy"] = float(np.abs(estimate - crowd.transitions[busy]).sum(-1).mean())
        out["annotators_with_100_labels"] = int(busy.sum())
        return out
