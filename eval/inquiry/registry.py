"""The names ``curate eval gsm8k-hidden`` offers (policies, scorers, users) with their help lines;
importable without numpy or torch, so ``curate --help`` stays fast."""
from __future__ import annotations

POLICIES = {
    "lamai": "ask the candidate the scorer ranks first (uncertainty or EIG)",
    "none": "answer directly, no questions",
    "random": "ask a random candidate question",
    "first": "ask the model's own first question (no selection)",
    "all": "ask every candidate question at once",
    "full": "answer with the hidden context given (reference)",
}
SCORERS = {"uncertainty": "spread of the imagined replies (default)",
           "eig": "expected information gain over the final answer's semantic classes"}
USERS = {"rule": "keyword rule over the hidden slots (hidden-slot world)",
         "retrieval": "the hidden sentence with the highest TF-IDF cosine, else I don't know",
         "model": "a language model prompted with the hidden context"}
GSM8K_USERS = ("retrieval", "model")
