"""``curate eval TASK``: generate with a model (or read a file of completions) and score a task."""
from __future__ import annotations

import argparse

KS_HELP = {"humaneval": "1,10,100; those with k <= --num-samples)", "pyfunc": "1,5,10; those with k <= --num-samples)"}


def register(subparsers: argparse._SubParsersAction) -> None:
    from curate.cli import common_options
    from eval.tasks import BUILTIN

    parser = subparsers.add_parser("eval", help=f"evaluate a model on a task ({', '.join(BUILTIN)})")
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    for name, entry in BUILTIN.items():
        task = tasks.add_parser(name, parents=[common_options()], help=entry.description,
                                description=entry.description)
        source = task.add_mutually_exclusive_group(required=True)
        source.add_argument("--model", help="model folder or hub id to generate with")
        samples_flags = ["--samples", "--predictions"] if name in ("gsm8k", "gsm8k-hidden", "arith") else ["--samples"]
        source.add_argument(*samples_flags, dest="samples", metavar="FILE",
                            help="score pre-generated completions: jsonl of {task_id, completion}")
        task.add_argument("--out", help="output folder (default: runs/eval/TASK-NAME)")
        task.add_argument("--limit", type=int, help="only the first N problems")
        task.add_argument("--num-samples", type=int, default=1, help="completions per problem (default: 1; "
                          "--n is a row count in curate select)")
        task.add_argument("--temperature", type=float,
                          help="sampling temperature (default: 0, greedy, for n=1; 0.8 for n>1)")
        task.add_argument("--top-p", type=float, default=0.95, help="(default: 0.95)")
        task.add_argument("--max-new-tokens", type=int, help="(default: the task's, 256 / 512)")
        task.add_argument("--seed", type=int, default=0, help="(default: 0)")
        task.add_argument("--k", type=_ks, help="pass@k values to report, e.g. 1,10 (default: "
                          + KS_HELP.get(name, "1)"))
        task.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"],
                          help="auto: vllm when installed and a GPU is present, else hf")
        task.add_argument("--batch-size", type=int, default=32, help="hf backend batch size (default: 32)")
        task.add_argument("--dtype", default="auto", help="auto, bf16, fp16 or fp32")
        task.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
        chat = task.add_mutually_exclusive_group()
        chat.add_argument("--chat", action="store_true", default=None,
                          help="prompt through the chat template (default: when the tokenizer has one)")
        chat.add_argument("--no-chat", dest="chat", action="store_false", help="plain prompts")
        task.add_argument("--system", help="system message")
        task.add_argument("--overwrite", action="store_true",
                          help="write into a non-empty --out that holds another configuration's run")
        task.add_argument("--no-resume", dest="resume", action="store_false",
                          help="ignore cached generations in the output folder")
        if name == "gsm8k-hidden":
            add_inquiry_options(task)
        if name in ("gsm8k", "gsm8k-hidden", "arith"):
            task.add_argument("--data", help="dataset file, folder or hub id (default: " + (
                "offline GSM8K, else openai/gsm8k)" if name != "arith" else
                "the task's own generated split: 2000 train / 500 test problems from a fixed seed)"))
            task.add_argument("--split", default="test", help="(default: test)")
            task.add_argument("--prompt-column", help="--data's question column (default: first of prompt, question, "
                              "instruction, ...)")
            task.add_argument("--answer-column", "--response-column", dest="answer_column",
                              help="--data's reference answer column, ending in '#### N' or a bare number "
                              "(default: first of answer, response, ...)")
            task.add_argument("--num-fewshot", type=int, default=0,
                              help="worked examples from the train split before each question (default: 0)")
            modes = ["strict", "flexible", "lm-eval-strict", "lm-eval-flexible"] + (["lines"] if name == "arith" else [])
            task.add_argument("--answer-mode", default="flexible", choices=modes,
                              help="strict: '#### N' or 'The answer is N'; flexible: else the last number "
                              "(both compare numbers by value); lm-eval-strict / lm-eval-flexible: "
                              "lm-evaluation-harness 0.4's gsm8k filters and exact_match"
                              + ("; lines: strict, and every equation line right" if name == "arith" else "")
                              + " (default: flexible)")
        else:
            if name == "pyfunc":
                task.add_argument("--data", help="HumanEval-format rows (prompt, entry_point, test), e.g. a "
                                  "split a pipeline's data section wrote (default: the task's generated split)")
                task.add_argument("--split", default="test", help="(default: test; the generated ones: train, test)")
            task.add_argument("--workers", type=int, help="sandbox processes at once (default: CPU count)")
            task.add_argument("--timeout", type=float, default=10.0, help="seconds per program (default: 10)")
        task.set_defaults(func=run_eval, default_out=default_out,
                          positive=("limit", "num_samples", "max_new_tokens", "batch_size", "workers", "answer_samples",
                                    "candidates", "replies", "per_turn", "calibration_size"))


def add_inquiry_options(task: argparse.ArgumentParser) -> None:
    """LaMAI's flags (``curate eval gsm8k-hidden``), their choices from the inquiry registries."""
    from eval.inquiry.registry import GSM8K_USERS, POLICIES, SCORERS, USERS

    task.add_argument("--inquiry", default="lamai", choices=list(POLICIES), help="; ".join(
        f"{k}: {v}" for k, v in POLICIES.items()) + " (default: lamai)")
    task.add_argument("--scorer", default="uncertainty", choices=list(SCORERS),
                      help="; ".join(f"{k}: {v}" for k, v in SCORERS.items()))
    task.add_argument("--user", default="retrieval", choices=list(GSM8K_USERS), help="the simulated user: " + "; ".join(
        f"{k}: {USERS[k]}" for k in GSM8K_USERS) + " (default: retrieval)")
    task.add_argument("--user-model", help="the model user's checkpoint (default: --model)")
    task.add_argument("--turns", type=int, default=3, help="most turns of questions (default: 3)")
    task.add_argument("--candidates", type=int, default=5, help="candidate questions per turn (default: 5)")
    task.add_argument("--answer-samples", type=int, default=5, help="answers sampled for the gate (default: 5)")
    task.add_argument("--replies", type=int, default=5, help="imagined replies per candidate (default: 5)")
    task.add_argument("--per-turn", type=int, default=1, help="questions asked per turn (default: 1)")
    task.add_argument("--threshold", default="median", type=_threshold,
                      help="answer once the answers' spread u is below this: a number, or median (of u on "
                      "--calibration-size train problems; default)")
    task.add_argument("--calibration-size", type=int, default=16, help="(default: 16)")
    task.add_argument("--embedder", default="hashing",
                      help="hashing (offline default) or a sentence-transformers folder or hub id")


def _threshold(text: str) -> float | str:
    if text == "median":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'median', got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got '{text}'")
    return value


def default_out(args: argparse.Namespace) -> str:
    from eval.evaluate import default_out_dir

    return str(default_out_dir(args.task, args.model, args.samples))


# Options that do not change the results (left out of run.json: a rerun with other values resumes).
NOT_CONFIG = ("func", "debug", "overwrite", "device", "batch_size", "workers", "resume", "positive", "default_out",
              "out", "command")


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None
    if min(ks) < 1:
        raise argparse.ArgumentTypeError(f"k must be positive, got '{text}'")
    return ks


def run_eval(args: argparse.Namespace) -> int:
    from eval.evaluate import EvalConfig, evaluate
    from eval.tasks import TaskOptions

    options = TaskOptions(
        source=getattr(args, "data", None), split=getattr(args, "split", "test"), limit=args.limit,
        prompt_column=getattr(args, "prompt_column", None), answer_column=getattr(args, "answer_column", None),
        num_fewshot=getattr(args, "num_fewshot", 0), chat=args.chat, system=args.system,
        answer_mode=getattr(args, "answer_mode", "flexible"), workers=getattr(args, "workers", None),
        timeout_s=getattr(args, "timeout", 10.0),
    )
    config = EvalConfig(
        task=args.task, model=args.model, samples_file=args.samples, out_dir=args.out,
        backend=args.backend, n=args.num_samples, temperature=args.temperature, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, seed=args.seed, ks=args.k, batch_size=args.batch_size,
        dtype=args.dtype, device=args.device, resume=args.resume, options=options,
    )
    from curate.core.runs import claim_output, run_log

    inquiry = inquiry_config(args, options) if args.task == "gsm8k-hidden" and args.model else None
    claim_output(args.out, f"eval {args.task}",
                 {k: v for k, v in sorted(vars(args).items()) if k not in NOT_CONFIG}, overwrite=args.overwrite)
    with run_log(args.out):
        if inquiry is not None:
            from eval.inquiry.evaluate import evaluate_inquiry

            summary = evaluate_inquiry(inquiry)
            print(format_inquiry(summary))
            return 0
        summary = evaluate(config)
    print(format_summary(summary))
    return 0


def inquiry_config(args: argparse.Namespace, options):
    """The LaMAI run ``curate eval gsm8k-hidden --model M`` describes (checked before any model loads)."""
    from eval.inquiry.evaluate import InquiryEvalConfig
    from eval.inquiry.llm import Sampling
    from eval.inquiry.loop import InquiryConfig

    inquiry = InquiryConfig(policy=args.inquiry, scorer=args.scorer, samples=args.answer_samples,
                            candidates=args.candidates, replies=args.replies, turns=args.turns,
                            per_turn=args.per_turn, seed=args.seed)
    sampling = Sampling(temperature=0.7 if args.temperature is None else args.temperature, top_p=args.top_p,
                        answer_tokens=args.max_new_tokens or 256)
    return InquiryEvalConfig(model=args.model, out_dir=args.out, inquiry=inquiry, user=args.user,
                             user_model=args.user_model, embedder=args.embedder, threshold=args.threshold,
                             calibration=args.calibration_size, sampling=sampling, backend=args.backend,
                             dtype=args.dtype, device=args.device, batch_size=args.batch_size, resume=args.resume,
                             options=options)


def format_inquiry(summary: dict) -> str:
    low, high = summary["accuracy_ci95"]
    policy = summary["inquiry"]["policy"] + (f" ({summary['inquiry']['scorer']})"
                                             if summary["inquiry"]["policy"] == "lamai" else "")
    return "\n".join([
        f"{summary['task']}: {summary['problems']} problems, inquiry {policy}, user {summary['user']} "
        f"({summary['backend']})",
        f"  accuracy  {100 * summary['accuracy']:6.2f}%  (95% CI {100 * low:.1f}-{100 * high:.1f})",
        f"  questions {summary['questions_per_problem']:.2f} per problem, {100 * summary['share_asking']:.0f}% "
        f"asked any; threshold u < {summary['threshold']:.4g}; leakage {100 * summary['leakage_rate']:.1f}%",
        f"  samples: {summary['files']['samples']}",
        f"  summary: {summary['files']['summary']}",
    ])


def format_summary(summary: dict) -> str:
    low, high = summary["accuracy_ci95"]
    lines = [f"{summary['task']}: {summary['problems']} problems, {summary['samples']} samples "
             f"({summary['backend']})"]
    metrics = [k for k in summary if k.startswith("pass@")] if summary["headline"] != "accuracy" else ["accuracy"]
    for name in metrics:
        value = summary[name]
        interval = f"  (95% CI {100 * low:.1f}-{100 * high:.1f})" if name in ("accuracy", "pass@1") else ""
        lines.append(f"  {name:<9} {100 * value:6.2f}%{interval}")
    lines.append(f"  samples: {summary['files']['samples']}")
    lines.append(f"  summary: {summary['files']['summary']}")
    return "\n".join(lines)
