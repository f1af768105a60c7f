"""The stages of a pipeline, in order: ``data`` (generated splits), ``start`` (the start model by
SFT), ``score`` (once per distinct selector configuration), ``select`` (per arm and seed),
``train`` (per arm and seed), ``eval`` (the start and every trained model, per evaluation),
``compare``. Each stage owns one folder in OUT and is done when its ``stage.json`` holds its key: a
digest of its own settings and the keys of the stages it reads, so editing the eval section reruns
evaluation and the comparison but not the training. Every draw is seeded (data by data.seed,
selection and training by the run's seed, sampling by eval.seed), so a stage rerun after a kill
gives what an uninterrupted run gives. Models appear whole (written beside their folder, renamed).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from curate.core.cache import digest, kill_point, model_fingerprint
from curate.core.io import atomic_dir, atomic_write_json, atomic_write_text, is_main_rank, main_rank_dir
from curate.pipeline.spec import ArmSpec, EvalSpec, PipelineSpec, resolve

MARKER = "stage.json"


@dataclass
class Stage:
    kind: str  # one of spec.STAGE_KINDS
    name: str  # e.g. "train learnalign seed 0"
    path: Path  # the stage's folder
    key: str  # digest of its inputs
    work: str  # what it does, for --dry-run and the stage line
    run: Callable[[Path], None]  # writes the stage's outputs into its folder (on every rank when launched)
    meta: dict[str, Any] = field(default_factory=dict)  # what the report reads: model, eval, arm, seed

    def done(self) -> bool:
        try:
            return json.loads((self.path / MARKER).read_text())["key"] == self.key
        except (OSError, ValueError, KeyError, TypeError):  # missing, unreadable or not a marker
            return False

    def execute(self, launch: Callable[[Stage], None] | None = None) -> None:
        """The stage's work (in this process, or by ``launch``: under ``accelerate launch``), then its marker."""
        import time

        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / MARKER).unlink(missing_ok=True)
        started = time.monotonic()
        launch(self) if launch else self.run(self.path)
        kill_point(self.kind, 1)  # test hook: the stage's work is done, its marker not yet written
        atomic_write_json(self.path / MARKER, {"key": self.key, "stage": self.name,
                                               "seconds": round(time.monotonic() - started, 1)})


def _key(*parts: Any) -> str:
    return digest(*(json.dumps(p, sort_keys=True, default=str) for p in parts))


def _text(path: str | None) -> str | None:
    """A recipe's or accelerate config's contents, for the keys of the stages it configures."""
    return Path(path).read_text(encoding="utf-8") if path else None


@dataclass
class Context:
    """What every stage of one plan shares: the spec, OUT, and the start model's path."""

    spec: PipelineSpec
    out: Path
    model: str  # the start every arm trains from (OUT/start/model when the file makes it)

    def source(self, value: str | None) -> str | None:
        return resolve(self.spec, value, self.out)


def plan(spec: PipelineSpec, out: Path) -> list[Stage]:
    """Every stage of ``spec`` with its folder under ``out`` and its key."""
    data = data_stage(spec, out) if spec.data else None
    start = start_stage(spec, out, data) if spec.start else None
    ctx = Context(spec, out, str(start.path / "model") if start else spec.model)
    origin = _key(data.key if data else None, start.key if start else model_fingerprint(spec.model))
    pool = _key(origin, asdict(spec.dataset))
    stages: list[Stage] = [s for s in (data, start) if s is not None]
    scores: dict[str, Stage] = {}
    for arm in spec.arms:
        if arm.selector is not None and repr(arm.scoring_key()) not in scores:
            scores[repr(arm.scoring_key())] = score_stage(ctx, arm, pool)
    stages += scores.values()
    selections = {(arm.name, seed): select_stage(ctx, arm, seed, pool, scores.get(repr(arm.scoring_key())))
                  for arm in spec.arms for seed in spec.seeds}
    stages += selections.values()
    trained = [train_stage(ctx, arm, seed, origin, selections[arm.name, seed]) for arm in spec.arms for seed in spec.seeds]
    stages += trained
    evals = []
    for e in spec.eval:
        evals.append(eval_stage(ctx, e, "start", ctx.model, _key("start", origin)))
        evals += [eval_stage(ctx, e, stage.meta["model"], stage.path / "model", stage.key) for stage in trained]
    stages += evals
    stages.append(compare_stage(ctx, evals, trained, list(scores.values())))
    return stages


def data_stage(spec: PipelineSpec, out: Path) -> Stage:
    d = spec.data
    key = _key(asdict(d), "data")

    def run(path: Path) -> None:
        from curate.pipeline.generators import write_splits

        write_splits(d.generator, d.config, d.splits, d.seed, path)

    sizes = ", ".join(f"{name} {size}" for name, size in d.splits.items())
    return Stage("data", "data", out / "data", key, f"{d.generator} splits ({sizes}), seed {d.seed}", run)


def start_stage(spec: PipelineSpec, out: Path, data: Stage | None) -> Stage:
    st = spec.start
    key = _key(data.key if data else None, asdict(st), _text(st.recipe),
               model_fingerprint(spec.model) if spec.model else None, "start")

    def run(path: Path) -> None:
        from curate.llm.data import load_data
        from sft.train import sft_configs, train as sft_train

        source = resolve(spec, st.data, out)
        init = spec.model
        if st.tiny is not None:
            from curate.llm.tiny import build_tiny_model

            init = str(build_tiny_model(path / "init", training_texts(load_data(source)), st.tiny,
                                        chat_template=st.chat_template))
        with atomic_dir(path / "model") as tmp:  # a half-saved model is never taken for a finished one
            sft_train(*sft_configs(st.recipe, model_name_or_path=init, dataset=source, output_dir=tmp,
                                   use_cpu=True if spec.device == "cpu" else None, **st.fields))

    made = "a tiny model built from scratch" if st.tiny is not None else spec.model
    return Stage("start", "start", out / "start", key, f"SFT of {made} on {st.data}", run)


def training_texts(rows: Any) -> list[str]:
    """The SFT samples as text (prompt and answer, plainly rendered), to train a tokenizer on."""
    from curate.llm.chat import render_pair
    from curate.llm.data import PROMPT_CANDIDATES, RESPONSE_CANDIDATES, resolve_column

    if {"prompt", "completion"} <= set(rows.column_names):  # already prompt-completion: as SFT reads it
        return [p + c for p, c in zip(rows["prompt"], rows["completion"])]
    prompt = resolve_column(rows, None, PROMPT_CANDIDATES, "prompt")
    answer = resolve_column(rows, None, RESPONSE_CANDIDATES, "response")
    return ["".join(render_pair(None, p, a, chat=False)) for p, a in zip(rows[prompt], rows[answer])]


def score_stage(ctx: Context, arm: ArmSpec, pool: str) -> Stage:
    spec = ctx.spec
    learnalign = arm.selector == "learnalign"  # its rollouts verify with train.task; its warmup trains
    key = _key(pool, arm.scoring_key(), spec.train.task if learnalign else None,
               _text(arm.warmup.recipe) if arm.warmup else None, _text(spec.accelerate) if arm.warmup else None,
               "score")
    name = f"{arm.selector}-{key[:8]}"

    def run(path: Path) -> None:
        from curate.llm.data import save_dataset

        selector = build_selector(ctx, arm, path)
        scored = selector.score(load_pool(ctx))
        if is_main_rank():  # under accelerate launch every rank scored a shard; the first one writes
            save_dataset(scored, path / "scored.jsonl")

    return Stage("score", f"score {name}", ctx.out / "scores" / name, key,
                 f"{arm.selector} scores of the pool" + (f" ({spec.dataset.limit} rows)" if spec.dataset.limit else ""),
                 run)


def select_stage(ctx: Context, arm: ArmSpec, seed: int, pool: str, scored: Stage | None) -> Stage:
    """The arm's rows for one seed (the random rule and tie-breaks draw from it; the full pool is the pool)."""
    spec = ctx.spec
    key = _key(pool if scored is None else scored.key, arm.method, arm.n, arm.ratio, seed,
               asdict(spec.gate) if spec.gate and arm.selector == "learnalign" else None, "select")

    def run(path: Path) -> None:
        from curate.llm.data import load_data, save_dataset
        from curate.selection import dataset_card, mark_selected, with_row_index

        if scored is None:
            save_dataset(with_row_index(load_pool(ctx)), path / "selected.jsonl")
            return
        rows = load_data(str(scored.path / "scored.jsonl"))
        if spec.gate is not None and "success_rate" in rows.column_names:
            from curate.pipeline.report import check_gate

            check_gate(rows["success_rate"], spec.gate, scored.name)
        selector = build_selector(ctx, arm, scored.path, seed=seed)
        selected = selector.select(rows, n=arm.n, ratio=arm.ratio)
        save_dataset(selected, path / "selected.jsonl")
        save_dataset(mark_selected(rows, selected), path / "scored.jsonl")
        card = atomic_write_text(path / "README.md", dataset_card(
            rows, selected, source=spec.dataset.source, selector=arm.selector, method=selector.method,
            budget={"n": arm.n, "ratio": arm.ratio}, config={**arm.config, "seed": seed},
            scoring_model=str(scored.path / "warmup") if arm.warmup else ctx.model))
        if arm.push_to_hub and seed == spec.seeds[0]:  # the first seed's, when made (a cached stage does not push)
            from curate.selection import push_selection

            push_selection(selected, card.read_text(encoding="utf-8"), arm.push_to_hub)

    budget = "the full pool" if scored is None else f"{arm.n or arm.ratio} by {arm.method or arm.selector}"
    return Stage("select", f"select {arm.name} seed {seed}", ctx.out / "selections" / f"{arm.name}-seed{seed}", key,
                 budget, run, {"arm": arm.name, "seed": seed})


def train_stage(ctx: Context, arm: ArmSpec, seed: int, origin: str, selection: Stage) -> Stage:
    spec = ctx.spec
    key = _key(selection.key, origin, asdict(spec.train), arm.train, _text(spec.train.recipe), _text(spec.accelerate),
               seed, "train")

    def run(path: Path) -> None:
        from curate.llm.data import load_data

        rows = load_data(str(selection.path / "selected.jsonl"))
        with main_rank_dir(path / "model") as tmp:  # a half-saved model is never taken for a finished one
            train(ctx, rows, selection.path / "selected.jsonl", Path(tmp), seed, arm.train)
            if is_main_rank():
                atomic_write_json(Path(tmp) / "provenance.json", {
                    "start": ctx.model, "arm": asdict(arm), "seed": seed, "selection": str(selection.path),
                    "selection_key": selection.key, "train": asdict(spec.train), "rows": len(rows)})

    work = f"{spec.train.kind} from the start on arm {arm.name}'s rows, seed {seed}"
    return Stage("train", f"train {arm.name} seed {seed}", ctx.out / "train" / f"{arm.name}-seed{seed}", key, work,
                 run, {"arm": arm.name, "seed": seed, "model": f"{arm.name} seed {seed}"})


def eval_stage(ctx: Context, e: EvalSpec, name: str, model: str | Path, upstream: str) -> Stage:
    spec = ctx.spec
    key = _key(upstream, asdict(e), "eval")
    several = len(spec.eval) > 1
    folder = ctx.out / "eval" / (e.name if several else "") / name.replace(" seed ", "-seed")

    def run(path: Path) -> None:
        from eval.evaluate import EvalConfig, evaluate
        from eval.tasks import TaskOptions

        evaluate(EvalConfig(task=e.task, model=str(model), out_dir=str(path), backend=e.backend, n=e.num_samples,
                            temperature=e.temperature, top_p=1.0, max_new_tokens=e.max_new_tokens, seed=e.seed,
                            batch_size=e.batch_size, device=spec.device, progress=False,
                            options=TaskOptions(source=ctx.source(e.data), split=e.split, limit=e.limit, chat=e.chat,
                                                answer_mode=e.answer_mode)))

    work = f"{e.task}: {e.limit or 'all'} problems x {e.num_samples} under {name}"
    return Stage("eval", f"eval {e.name + ' ' if several else ''}{name}", folder, key, work, run,
                 {"eval": e.name, "model": name})


def compare_stage(ctx: Context, evals: list[Stage], trained: list[Stage], scores: list[Stage]) -> Stage:
    from curate.pipeline.report import write_report

    key = _key([stage.key for stage in evals + scores], "compare")
    return Stage("compare", "compare", ctx.out / "report", key, "paired comparisons: every arm vs the start and each other",
                 lambda path: write_report(ctx.spec, evals, path, trained, [stage.path for stage in scores]))


# ---- the work of the stages ---------------------------------------------------------------------

def load_pool(ctx: Context):
    """The dataset section's rows, its named columns renamed to the ones every task, selector and
    trainer reads first (``prompt``, ``response``), so nothing downstream needs column options."""
    from curate.llm.data import load_data
    from eval.tasks.base import map_columns

    d = ctx.spec.dataset
    ds = load_data(ctx.source(d.source), split=d.split, config=d.config, limit=d.limit)
    return map_columns(ds, d.prompt_column, d.answer_column, flags=("dataset.prompt_column", "dataset.answer_column"))


def build_selector(ctx: Context, arm: ArmSpec, work_dir: Path, seed: int | None = None) -> Any:
    """The arm's selector from the registry (``seed``: the selection's, for its random rule and
    tie-breaks; the scoring's own seed stays the config's)."""
    from curate.learnalign import WarmupConfig
    from curate.registry import get_selector

    spec = ctx.spec
    config = dict(arm.config) if seed is None else {**arm.config, "seed": seed}
    params: dict[str, Any] = dict(model=ctx.model, cache_dir=ctx.out / "cache", device=spec.device, progress=False,
                                  **config)
    if arm.method:
        params["method"] = arm.method
    if arm.selector == "learnalign":
        params.update(task=spec.train.task, work_dir=work_dir,
                      warmup=WarmupConfig(**asdict(arm.warmup)) if arm.warmup else None)
    return get_selector(arm.selector, **params)


def train(ctx: Context, rows: Any, selection: Path, output_dir: Path, seed: int,
          arm_fields: dict[str, Any] | None = None) -> None:
    """One training run from the start model on ``rows`` (GRPO) or the selection file (SFT), with
    the arm's own fields on top of the train section's."""
    t = ctx.spec.train
    cpu = True if ctx.spec.device == "cpu" else None
    fields = {**t.fields, **(arm_fields or {})}
    if fields.get("eval_dataset"):  # held-out rows scored during training: a data:NAME split or a source
        fields["eval_dataset"] = ctx.source(fields["eval_dataset"])
    if t.kind == "grpo":
        from rl.runs import grpo_configs, run_grpo

        run_grpo(grpo_configs(t.recipe, model_name_or_path=ctx.model, task=t.task, output_dir=output_dir, seed=seed,
                              use_cpu=cpu, **fields), rows)
    else:
        from sft.train import sft_configs, train as sft_train

        sft_train(*sft_configs(t.recipe, model_name_or_path=ctx.model, dataset=selection, output_dir=output_dir,
                               seed=seed, use_cpu=cpu, **fields))
