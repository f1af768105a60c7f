"""The stages of a pipeline, in order: ``score`` (once per distinct selector configuration),
``select`` (per arm), ``train`` (per arm and seed), ``eval`` (the start, and every trained model),
``compare``. Each stage owns one folder in OUT and is done when its ``stage.json`` holds its key: a
digest of its own settings and the keys of the stages it reads, so editing the eval section reruns
evaluation and the comparison but not the training. Every draw is seeded (selection by the
selector's seed, training by the run's seed, sampling by eval.seed), so a stage rerun after a kill
gives what an uninterrupted run gives. Models appear whole (written beside their folder, renamed).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from curate.core.cache import digest, kill_point, model_fingerprint
from curate.core.io import atomic_dir, atomic_write_json, atomic_write_text
from curate.pipeline.spec import ArmSpec, PipelineSpec

MARKER = "stage.json"


@dataclass
class Stage:
    kind: str  # one of spec.STAGE_KINDS
    name: str  # e.g. "train learnalign seed 0"
    path: Path  # the stage's folder
    key: str  # digest of its inputs
    work: str  # what it does, for --dry-run and the stage line
    run: Callable[[Path], None]  # writes the stage's outputs into its folder

    def done(self) -> bool:
        try:
            return json.loads((self.path / MARKER).read_text())["key"] == self.key
        except (OSError, ValueError, KeyError, TypeError):  # missing, unreadable or not a marker
            return False

    def execute(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / MARKER).unlink(missing_ok=True)
        self.run(self.path)
        kill_point(self.kind, 1)  # test hook: the stage's work is done, its marker not yet written
        atomic_write_json(self.path / MARKER, {"key": self.key, "stage": self.name})


def _key(*parts: Any) -> str:
    return digest(*(json.dumps(p, sort_keys=True, default=str) for p in parts))


def plan(spec: PipelineSpec, out: Path) -> list[Stage]:
    """Every stage of ``spec`` with its folder under ``out`` and its key."""
    start = _key(model_fingerprint(spec.model), asdict(spec.dataset))
    stages: list[Stage] = []
    scores: dict[Any, Stage] = {}
    for arm in spec.arms:
        if arm.selector is not None and repr(arm.scoring_key()) not in scores:
            scores[repr(arm.scoring_key())] = score_stage(spec, arm, out, start)
    stages += scores.values()
    selections = {arm.name: select_stage(spec, arm, out, start, scores.get(repr(arm.scoring_key()))) for arm in spec.arms}
    stages += selections.values()
    trained = [train_stage(spec, arm, seed, out, selections[arm.name]) for arm in spec.arms for seed in spec.seeds]
    stages += trained
    evals = [eval_stage(spec, "start", spec.model, _key("start", start), out / "eval" / "start")]
    evals += [eval_stage(spec, stage.name.removeprefix("train "), stage.path / "model", stage.key,
                         out / "eval" / stage.path.name) for stage in trained]
    stages += evals
    stages.append(compare_stage(spec, out, evals))
    return stages


def score_stage(spec: PipelineSpec, arm: ArmSpec, out: Path, start: str) -> Stage:
    key = _key(start, arm.scoring_key(), "score")
    name = f"{arm.selector}-{key[:8]}"

    def run(path: Path) -> None:
        from curate.llm.data import save_dataset

        selector = build_selector(spec, arm, path, out / "cache")
        save_dataset(selector.score(load_pool(spec)), path / "scored.jsonl")

    return Stage("score", f"score {name}", out / "scores" / name, key,
                 f"{arm.selector} scores of the pool" + (f" ({spec.dataset.limit} rows)" if spec.dataset.limit else ""),
                 run)


def select_stage(spec: PipelineSpec, arm: ArmSpec, out: Path, start: str, scored: Stage | None) -> Stage:
    key = _key(start if scored is None else scored.key, arm.method, arm.n, arm.ratio, "select")

    def run(path: Path) -> None:
        from curate.llm.data import load_data, save_dataset
        from curate.selection import dataset_card, mark_selected, with_row_index

        if scored is None:
            save_dataset(with_row_index(load_pool(spec)), path / "selected.jsonl")
            return
        selector = build_selector(spec, arm, scored.path, out / "cache")
        rows = load_data(str(scored.path / "scored.jsonl"))
        selected = selector.select(rows, n=arm.n, ratio=arm.ratio)
        save_dataset(selected, path / "selected.jsonl")
        save_dataset(mark_selected(rows, selected), path / "scored.jsonl")
        card = atomic_write_text(path / "README.md", dataset_card(
            rows, selected, source=spec.dataset.source, selector=arm.selector, method=selector.method,
            budget={"n": arm.n, "ratio": arm.ratio}, config=arm.config,
            scoring_model=str(scored.path / "warmup") if arm.warmup else spec.model))
        if arm.push_to_hub:  # when the selection is made (a cached stage does not push again)
            from curate.selection import push_selection

            push_selection(selected, card.read_text(encoding="utf-8"), arm.push_to_hub)

    budget = "the full pool" if scored is None else f"{arm.n or arm.ratio} by {arm.method or arm.selector}"
    return Stage("select", f"select {arm.name}", out / "selections" / arm.name, key, budget, run)


def train_stage(spec: PipelineSpec, arm: ArmSpec, seed: int, out: Path, selection: Stage) -> Stage:
    key = _key(selection.key, model_fingerprint(spec.model), asdict(spec.train), seed, "train")

    def run(path: Path) -> None:
        from curate.llm.data import load_data

        rows = load_data(str(selection.path / "selected.jsonl"))
        with atomic_dir(path / "model") as tmp:  # a half-saved model is never taken for a finished one
            train(spec, rows, selection.path / "selected.jsonl", Path(tmp), seed)
            atomic_write_json(Path(tmp) / "provenance.json", {
                "start": spec.model, "arm": asdict(arm), "seed": seed, "selection": str(selection.path),
                "selection_key": selection.key, "train": asdict(spec.train), "rows": len(rows)})

    work = f"{spec.train.kind} from {spec.model} on arm {arm.name}'s rows, seed {seed}"
    return Stage("train", f"train {arm.name} seed {seed}", out / "train" / f"{arm.name}-seed{seed}", key, work, run)


def eval_stage(spec: PipelineSpec, name: str, model: str | Path, upstream: str, path: Path) -> Stage:
    key = _key(upstream, asdict(spec.eval), "eval")

    def run(folder: Path) -> None:
        from eval.evaluate import EvalConfig, evaluate
        from eval.tasks import TaskOptions

        e = spec.eval
        evaluate(EvalConfig(task=e.task, model=str(model), out_dir=str(folder), n=e.num_samples,
                            temperature=e.temperature, top_p=1.0, max_new_tokens=e.max_new_tokens, seed=e.seed,
                            device=spec.device, progress=False,
                            options=TaskOptions(source=e.data, split=e.split, limit=e.limit, chat=e.chat,
                                                answer_mode=e.answer_mode)))

    work = f"{spec.eval.task}: {spec.eval.limit or 'all'} problems x {spec.eval.num_samples} under {name}"
    return Stage("eval", f"eval {name}", path, key, work, run)


def compare_stage(spec: PipelineSpec, out: Path, evals: list[Stage]) -> Stage:
    from curate.pipeline.report import write_report

    key = _key([stage.key for stage in evals], "compare")
    return Stage("compare", "compare", out / "report", key, "paired comparisons: every arm vs the start and each other",
                 lambda path: write_report(spec, evals, path))


# ---- the work of the stages ---------------------------------------------------------------------

def load_pool(spec: PipelineSpec):
    """The dataset section's rows, its named columns renamed to the ones every task, selector and
    trainer reads first (``prompt``, ``response``), so nothing downstream needs column options."""
    from curate.llm.data import load_data
    from eval.tasks.base import map_columns

    d = spec.dataset
    ds = load_data(d.source, split=d.split, config=d.config, limit=d.limit)
    return map_columns(ds, d.prompt_column, d.answer_column, flags=("dataset.prompt_column", "dataset.answer_column"))


def build_selector(spec: PipelineSpec, arm: ArmSpec, work_dir: Path, cache: Path) -> Any:
    """The arm's selector from the registry, its columns mapped from the dataset section."""
    from curate.learnalign import WarmupConfig
    from curate.registry import get_selector

    config = dict(arm.config)
    params: dict[str, Any] = dict(model=spec.model, cache_dir=cache, device=spec.device, progress=False, **config)
    if arm.method:
        params["method"] = arm.method
    if arm.selector == "learnalign":
        params.update(task=spec.train.task, work_dir=work_dir,
                      warmup=WarmupConfig(**asdict(arm.warmup)) if arm.warmup else None)
    return get_selector(arm.selector, **params)


def train(spec: PipelineSpec, rows: Any, selection: Path, output_dir: Path, seed: int) -> None:
    """One training run from the start model on ``rows`` (GRPO) or the selection file (SFT)."""
    t = spec.train
    cpu = True if spec.device == "cpu" else None
    if t.kind == "grpo":
        from rl.runs import grpo_configs, run_grpo

        run_grpo(grpo_configs(t.recipe, model_name_or_path=spec.model, task=t.task, output_dir=output_dir, seed=seed,
                              use_cpu=cpu, **t.fields), rows)
    else:
        from sft.train import sft_configs, train as sft_train

        sft_train(*sft_configs(t.recipe, model_name_or_path=spec.model, dataset=selection, output_dir=output_dir,
                               seed=seed, use_cpu=cpu, **t.fields))
