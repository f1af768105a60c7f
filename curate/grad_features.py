"""Per-sample projected GRPO gradients over LoRA parameters (LearnAlign, arXiv 2506.11480, Sec. 3.2).

For prompt i with G rollouts o_1..o_G, rewards r_g and group-normalised advantages
Â_g = (r_g - mean(r)) / (std(r) + eps), the GRPO loss at the reference policy θ_s (on-policy, so
the clipped ratio is 1) is

    L_i = -(1/Z_g) Σ_g Σ_t c_{g,t} log π_θ(o_{g,t} | q, o_{g,<t}),
    c_{g,t} = Â_g + β (π_ref(o_{g,t}) / π_θ(o_{g,t}) - 1)          (coefficient held fixed)

whose gradient is the GRPO gradient with the k3 KL estimator's term. The token aggregation Z_g
follows the training loss (``GradientConfig.loss_type``): ``"dapo"`` (TRL 1.x's default,
token-level: the trainer divides by the token count of the whole batch, the same number for every
prompt of a step, so per prompt it is a constant and Z = G here; a longer group then has a larger
gradient, the length bias the paper's learnability term corrects) or ``"grpo"`` (the original
GRPO loss: Z_g = G |o_g|, each sequence averaged over its own tokens). g_i = ∇ L_i over the
LoRA parameters only (as LESS does), projected to k dimensions and normalised to unit norm.

Projection: a sparse Johnson–Lindenstrauss transform (CountSketch): coordinate j of the gradient
is added, with a random sign s(j), to output h(j) of k, so <Px, Py> is an unbiased estimate of
<x, y>. It costs O(d) memory (one bucket and one sign per coordinate), never a d x k matrix.

Batched path: one forward and one backward per batch of rollouts. Hooks on every LoRA linear layer
keep its input activations a (batch, tokens, d_in) and output gradients δ; the per-rollout weight
gradient is Σ_t δ_t a_tᵀ (a batched einsum), which is exact because rollouts in a batch do not
interact. ``reference_features`` is the plain way (one backward per prompt, parameters' .grad).

The reference policy π_ref is the model with its LoRA adapter disabled (the base model); a model
without an adapter gets a fresh LoRA (zero B, so only B's gradient is non-zero, and π_ref = π_θ),
its A drawn from ``GradientConfig.seed`` (as is the projection), never from the global RNG state.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from curate.llm.batching import token_budget_batches
from curate.core.cache import derive_seed
from curate.core.errors import BadInputError
from curate.llm.batching import padded_targets
from curate.llm.models import target_logprobs


LOSS_TYPES = ("dapo", "grpo")


@dataclass
class GradientConfig:
    projection_dim: int = 8192  # k
    beta: float = 0.04  # KL coefficient in the per-token coefficient
    std_eps: float = 1e-4  # Â = (r - mean) / (std + eps), std unbiased as in TRL
    lora_r: int = 8  # for a fresh adapter when the model has none
    lora_alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    max_tokens_per_batch: int = 8192  # rollouts per forward/backward: a token budget ...
    max_batch_size: int = 64  # ... and a cap on rollouts
    seed: int = 0  # the projection and a fresh adapter's init (both in the gradient cache key)
    loss_type: str = "dapo"  # token aggregation as the GRPO trainer's loss: "dapo" (TRL's default) or "grpo"

    def __post_init__(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise BadInputError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got '{self.loss_type}'")
        if self.projection_dim < 1:
            raise BadInputError(f"projection_dim must be at least 1, got {self.projection_dim}")
        if self.beta < 0:
            raise BadInputError(f"beta must be >= 0, got {self.beta}")
        self.target_modules = tuple(self.target_modules)


@dataclass
class RolloutGroup:
    """One prompt's G rollouts: token ids and the verifier's rewards."""

    prompt_ids: list[int]
    completion_ids: list[list[int]]
    rewards: list[float] = field(default_factory=list)


def group_advantages(rewards: Sequence[float], eps: float = 1e-4) -> np.ndarray:
    """Â_g = (r_g - mean r) / (std r + eps) over one group (0 for a group of one)."""
    r = np.asarray(rewards, dtype=np.float64)
    if len(r) < 2:
        return np.zeros_like(r)
    return (r - r.mean()) / (r.std(ddof=1) + eps)


def prepare_lora(model: nn.Module, config: GradientConfig) -> list[tuple[str, nn.Linear]]:
    """The model's LoRA linear layers (adding a fresh adapter when it has none), in module order;
    only their weights require gradients."""
    lora = _lora_linears(model)
    if not lora:
        add_seeded_adapter(model, config)
        lora = _lora_linears(model)
    if not lora:
        raise BadInputError(f"the model has no LoRA-able linear layers named {list(config.target_modules)}")
    for param in model.parameters():
        param.requires_grad_(False)
    for _, module in lora:
        module.weight.requires_grad_(True)
    return lora


def add_seeded_adapter(model: nn.Module, config: GradientConfig) -> None:
    """A fresh LoRA adapter whose random init (peft draws A from the global RNG) is fixed by
    ``config.seed``, so every chunk of a resumed run sees the same adapter; the caller's global RNG
    state is restored afterwards."""
    from peft import LoraConfig

    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derive_seed(config.seed, "lora-init"))
        try:
            model.add_adapter(LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                                         target_modules=list(config.target_modules)))
        except ValueError as err:
            raise BadInputError(f"cannot put LoRA on the model's layers {list(config.target_modules)}: "
                                f"{str(err).splitlines()[0]}") from err


def check_lora_targets(model: str, targets: Sequence[str]) -> None:
    """Fail early (without loading weights) when ``model`` has no linear layer named in ``targets``
    and no LoRA adapter of its own."""
    from pathlib import Path

    if (Path(model) / "adapter_config.json").exists():
        return
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
    names = {name.rsplit(".", 1)[-1] for name, m in skeleton.named_modules() if isinstance(m, nn.Linear)}
    if not names & set(targets):
        raise BadInputError(f"the model has no LoRA-able linear layers named {list(targets)}; "
                            f"its linear layers: {', '.join(sorted(names)) or 'none'}")


def _lora_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and (".lora_A." in name or ".lora_B." in name)]


class CountSketch:
    """Sparse JL projection of a gradient laid out as blocks (one per layer) to ``dim`` outputs."""

    def __init__(self, block_sizes: Sequence[int], dim: int, seed: int = 0, device: torch.device | str = "cpu"):
        generator = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.buckets = [torch.randint(0, dim, (n,), generator=generator).to(device) for n in block_sizes]
        self.signs = [(torch.randint(0, 2, (n,), generator=generator) * 2 - 1).float().to(device)
                      for n in block_sizes]

    def add(self, out: torch.Tensor, block: int, values: torch.Tensor) -> torch.Tensor:
        """out (rows, dim) += projection of ``values`` (rows, block size) of one block."""
        return out.index_add_(1, self.buckets[block], values.float() * self.signs[block])

    def project(self, blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        out = torch.zeros(blocks[0].shape[0], self.dim, device=blocks[0].device)
        for b, values in enumerate(blocks):
            self.add(out, b, values)
        return out


@contextmanager
def disabled_adapters(model: nn.Module) -> Iterator[None]:
    """The reference policy: the model with its LoRA adapters switched off."""
    model.disable_adapters()
    try:
        yield
    finally:
        model.enable_adapters()


def _rollout_batch(groups: Sequence[RolloutGroup], items: Sequence[tuple[int, int]], pad_id: int,
                   device: torch.device) -> tuple[torch.Tensor, ...]:
    """Right-padded ids and mask of the (group, rollout) items; the (row, col) of completion tokens."""
    seqs = [groups[i].prompt_ids + groups[i].completion_ids[g] for i, g in items]
    return padded_targets(seqs, [len(groups[i].prompt_ids) for i, _ in items], pad_id, device)


def grpo_surrogate(model: nn.Module, groups: Sequence[RolloutGroup], items: Sequence[tuple[int, int]],
                   config: GradientConfig, pad_id: int, reference: nn.Module | None = None) -> torch.Tensor:
    """Per item (rollout) its term of L_i (see the module docstring), differentiable; shape (items,).
    π_ref is ``reference`` when given (e.g. a staged run's original model), else the model with
    its adapters off."""
    device = next(model.parameters()).device
    ids, mask, rows, cols = _rollout_batch(groups, items, pad_id, device)
    logp = target_logprobs(model, ids, mask, rows, cols)
    coeff = torch.zeros_like(logp)
    advantages = {i: group_advantages(groups[i].rewards, config.std_eps) for i, _ in items}
    adv = torch.tensor([advantages[i][g] for i, g in items], dtype=torch.float32, device=device)[rows]
    coeff += adv
    if config.beta:
        with torch.no_grad(), (nullcontext() if reference is not None else disabled_adapters(model)):
            ref = target_logprobs(reference if reference is not None else model, ids, mask, rows, cols)
        coeff += config.beta * (torch.exp(ref - logp.detach()) - 1)
    sizes = torch.tensor([_normaliser(groups[i], g, config.loss_type) for i, g in items],
                         dtype=torch.float32, device=device)
    per_token = -coeff * logp / sizes[rows]
    return torch.zeros(len(items), device=device).index_add(0, rows, per_token)


def _normaliser(group: RolloutGroup, g: int, loss_type: str) -> int:
    """Z for rollout g's tokens: G (dapo; the batch's token count is a constant per step) or G x the
    rollout's length (grpo)."""
    if loss_type == "dapo":
        return len(group.completion_ids)
    return len(group.completion_ids[g]) * len(group.completion_ids)


def _items(groups: Sequence[RolloutGroup], which: Sequence[int]) -> list[tuple[int, int]]:
    return [(i, g) for i in which for g, c in enumerate(groups[i].completion_ids) if c]


def _sketch(lora: list[tuple[str, nn.Linear]], config: GradientConfig, device) -> CountSketch:
    return CountSketch([m.weight.numel() for _, m in lora], config.projection_dim, config.seed, device)


def batched_features(model: nn.Module, groups: Sequence[RolloutGroup], config: GradientConfig, pad_id: int,
                     which: Sequence[int] | None = None, progress: bool = True,
                     reference: nn.Module | None = None) -> torch.Tensor:
    """Projected (not yet normalised) gradients g_i, one row per group, from one forward and one
    backward per batch of rollouts; rows of groups not in ``which`` stay zero."""
    lora = prepare_lora(model, config)
    device = next(model.parameters()).device
    sketch = _sketch(lora, config, device)
    features = torch.zeros(len(groups), config.projection_dim, device=device)
    items = _items(groups, range(len(groups)) if which is None else which)
    lengths = [len(groups[i].prompt_ids) + len(groups[i].completion_ids[g]) for i, g in items]
    inputs: dict[int, torch.Tensor] = {}
    output_grads: dict[int, torch.Tensor] = {}

    def keep(b: int):
        def forward_hook(module, args, output):
            if not torch.is_grad_enabled():
                return  # a reference forward (no_grad) through the same layers
            inputs[b] = args[0].detach()
            output.register_hook(lambda grad: output_grads.__setitem__(b, grad.detach()))
        return forward_hook

    handles = [m.register_forward_hook(keep(b)) for b, (_, m) in enumerate(lora)]
    was_training = model.training
    model.eval()  # no dropout: the gradient of the policy as it samples
    try:
        batches = token_budget_batches(lengths, config.max_tokens_per_batch, config.max_batch_size)
        for batch in tqdm(batches, desc="GRPO gradients", unit="batch", disable=not progress):
            chosen = [items[k] for k in batch]
            inputs.clear()
            output_grads.clear()
            loss = grpo_surrogate(model, groups, chosen, config, pad_id, reference).sum()
            inputs_now = dict(inputs)  # the reference forward (adapters off) does not call LoRA layers
            loss.backward()
            projected = torch.zeros(len(chosen), config.projection_dim, device=device)
            for b in range(len(lora)):
                per_rollout = torch.einsum("bto,bti->boi", output_grads[b].float(), inputs_now[b].float())
                sketch.add(projected, b, per_rollout.flatten(1))
            owner = torch.tensor([i for i, _ in chosen], device=device)
            features.index_add_(0, owner, projected)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return features


def reference_features(model: nn.Module, groups: Sequence[RolloutGroup], config: GradientConfig, pad_id: int,
                       which: Sequence[int] | None = None, progress: bool = True,
                       reference: nn.Module | None = None) -> torch.Tensor:
    """The plain way (as LESS computes gradients): one prompt at a time (its G rollouts in one
    batch), one backward each, the parameters' ``.grad`` flattened and projected."""
    lora = prepare_lora(model, config)
    device = next(model.parameters()).device
    sketch = _sketch(lora, config, device)
    features = torch.zeros(len(groups), config.projection_dim, device=device)
    was_training = model.training
    model.eval()
    try:
        for i in tqdm(range(len(groups)) if which is None else which, desc="GRPO gradients (reference)",
                      disable=not progress):
            model.zero_grad(set_to_none=True)
            items = _items(groups, [i])
            if not items:
                continue
            grpo_surrogate(model, groups, items, config, pad_id, reference).sum().backward()
            features[i] = sketch.project([m.weight.grad.reshape(1, -1) for _, m in lora])[0]
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return features


def normalise(features: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm (zero rows stay zero)."""
    norms = features.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, features / norms.clamp_min(1e-30), features)
