"""LaMAI on the hidden-slot world (exact ground truth) with the spec's scripted stochastic assistant
and the rule user: accuracy of the final answer and questions asked per problem for answering
directly, LaMAI with either scorer, a random candidate, all candidates and the model's own first
question, over seeds (each seed a fresh world and fresh sampling); mean ± std over seeds and paired
differences (mean [95% t interval]) to answering directly and between LaMAI and random.

Calibration first (printed and in the JSON): the share of problems whose step-1 spread u is above
the gate threshold (questions can only help there) and the direct accuracy (about 1/candidates when
one candidate is right by chance).

    python benchmarks/lamai_slot_world.py [--seeds 0 1 2] [--problems 300] [--candidates 4]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import mean_std, paired_interval, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARMS = {  # label: (policy, scorer)
    "direct": ("none", "uncertainty"),
    "lamai (uncertainty)": ("lamai", "uncertainty"),
    "lamai (EIG)": ("lamai", "eig"),
    "random": ("random", "uncertainty"),
    "all": ("all", "uncertainty"),
    "first question": ("first", "uncertainty"),
}


def run_arm(policy: str, scorer: str, seed: int, args: argparse.Namespace) -> dict:
    from eval.inquiry.embed import HashingEmbedder
    from eval.inquiry.loop import InquiryConfig, inquire
    from eval.inquiry.users import RuleUser
    from eval.inquiry.world import ScriptedAssistant, WorldConfig, make_problem

    world, embedder = WorldConfig(candidates=args.candidates, seed=seed), HashingEmbedder()
    config = InquiryConfig(policy=policy, scorer=scorer, turns=args.turns, seed=seed)
    correct, asked, gated = [], [], []
    started = time.monotonic()
    for index in range(args.problems):
        problem = make_problem(index, world)
        run = inquire(problem, ScriptedAssistant(), RuleUser(), config, embedder)
        correct.append(run.final == problem.gold)
        asked.append(run.questions_asked)
        gated.append(bool(run.trace) and run.trace[0]["u"] >= config.threshold)
    return {"accuracy": statistics.fmean(correct), "questions": statistics.fmean(asked),
            "share_above_gate": statistics.fmean(gated) if policy != "none" else None,
            "seconds": time.monotonic() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--problems", type=int, default=300)
    parser.add_argument("--candidates", type=int, default=4, help="people matching the query (default: 4)")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    results = {label: [run_arm(*arm, seed, args) for seed in args.seeds] for label, arm in ARMS.items()}
    gate = statistics.fmean(r["share_above_gate"] for r in results["lamai (uncertainty)"])
    print(f"calibration: u above the gate at turn 0 on {100 * gate:.1f}% of problems; direct accuracy "
          f"{mean_std([r['accuracy'] for r in results['direct']])}% (chance 1/{args.candidates})")
    direct = [r["accuracy"] for r in results["direct"]]
    rows = []
    for label, runs in results.items():
        accuracy = [r["accuracy"] for r in runs]
        questions = [r["questions"] for r in runs]
        rows.append([label, mean_std(accuracy), f"{statistics.fmean(questions):.2f} ± {statistics.pstdev(questions):.2f}",
                     "-" if label == "direct" else paired_interval(accuracy, direct),
                     f"{statistics.fmean(r['seconds'] for r in runs):.1f}"])
    lamai_vs_random = {scorer: paired_interval([r["accuracy"] for r in results[f"lamai ({scorer})"]],
                                               [r["accuracy"] for r in results["random"]])
                       for scorer in ("uncertainty", "EIG")}
    print("paired lamai - random (points):", lamai_vs_random)
    command = "python benchmarks/lamai_slot_world.py " + " ".join(sys.argv[1:])
    report("lamai_slot_world", command.strip(),
           ["arm", "accuracy %", "questions per problem", "accuracy vs direct (pts, paired)", "seconds/run"], rows,
           {"runs": results, "share_above_gate": gate, "lamai_minus_random": lamai_vs_random,
            "settings": vars(args)}, args.out)


if __name__ == "__main__":
    main()
