"""CLI start-up: wall time of ``curate ... --help`` (lazy imports), against the reference way, a
help that imports the method modules it describes (torch, transformers, TRL) before printing.

    python benchmarks/cli_help.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import common

COMMANDS = (["--help"], ["select", "learnalign", "--help"], ["eval", "gsm8k", "--help"], ["demo", "--help"],
            ["vision", "selcl", "--help"])
EAGER = "import curate.learnalign, curate.cdas, curate.demo, rl.grpo, sft.train, eval.evaluate"


def seconds(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, cwd=common.Path(__file__).resolve().parents[1], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cli = [sys.executable, "-c", "import sys; from curate.cli import main; sys.exit(main())"]
    eager = seconds([sys.executable, "-c", EAGER], args.repeats)
    rows = []
    for command in COMMANDS:
        lazy = seconds(cli + command, args.repeats)
        rows.append(["curate " + " ".join(command), round(lazy, 3), round(eager, 2), round(eager / lazy, 1)])
    common.report("cli_help", f"python benchmarks/cli_help.py --repeats {args.repeats}",
                  ["command", "seconds (median)", "eager imports (s)", "ratio"], rows)


if __name__ == "__main__":
    main()
