"""Evaluation: tasks as small declarative units (:mod:`eval.tasks`: prompts, verifier, stop
strings), the generate-and-verify run with its cache and report (:mod:`eval.evaluate`), paired
statistics (:mod:`eval.metrics`), GSM8K answer checking and HumanEval in a sandbox."""
