"""CDAS (CodeACT): IFD = PPL(A|Q) / PPL(A) computed in batches equals the one-at-a-time definition;
selection keeps floor(m * n_c) rows with IFD < 1 per cluster, highest IFD first; bad rows are
reported, never selected; the CLI writes the selection, the report and the plot."""
from __future__ import annotations

import json
import math

import datasets
import numpy as np
import pytest

from curate import cdas
from curate.ifd import IFDConfig, encode_pairs, ifd_reference, ifd_scores
from curate.cli import main
from curate.core.errors import BadInputError


@pytest.fixture(scope="module")
def gsm8k_rows(gsm8k_dir):
    rows = [json.loads(line) for line in (gsm8k_dir / "train.jsonl").read_text().splitlines()[:40]]
    return [r["question"] for r in rows], [r["answer"] for r in rows]


def test_batched_ifd_equals_the_reference_loop(tiny_model, gsm8k_rows):
    model, tokenizer = tiny_model
    prompts, answers = gsm8k_rows
    # A small window and budget: prompts get cut, batches mix answer-only and conditioned sequences.
    config = IFDConfig(max_length=160, max_tokens_per_batch=800, logits_rows=100)
    fast = ifd_scores(prompts, answers, model, tokenizer, config, progress=False)
    slow = ifd_reference(prompts, answers, model, tokenizer, config, progress=False)
    assert fast.skip_reason == slow.skip_reason and 0 < fast.skip_reason.count("") < len(prompts)
    for name in ("ppl_answer", "ppl_conditioned", "ifd"):
        a, b = np.array(getattr(fast, name)), np.array(getattr(slow, name))
        assert np.array_equal(np.isnan(a), np.isnan(b))
        ok = ~np.isnan(a)
        assert np.all(np.abs(a[ok] - b[ok]) / b[ok] < 1e-4), name
    assert np.allclose(fast.ifd, np.array(fast.ppl_conditioned) / np.array(fast.ppl_answer), equal_nan=True)


def test_ifd_matches_the_definition_by_hand(tiny_model):
    """PPL(A|Q) and PPL(A) over the same answer tokens, straight from the logits."""
    import torch

    model, tokenizer = tiny_model
    question, answer = "How many apples are left?", "She has 5 - 2 = 3 apples left.\n#### 3"
    config = IFDConfig(chat=False, template="codeact")  # CodeACT's format: the answer follows a newline
    result = ifd_scores([question], [answer], model, tokenizer, config, progress=False)
    answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
    prompt_ids = tokenizer(config.template.format(prompt=question), add_special_tokens=False).input_ids
    assert tokenizer.bos_token_id is None  # so the first answer token is not scored in either

    def ppl(ids, first):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        return math.exp(-np.mean([logp[t - 1, ids[t]].item() for t in range(first, len(ids))]))

    ppl_a = ppl(answer_ids, 1)
    ppl_c = ppl(prompt_ids + answer_ids, len(prompt_ids) + 1)
    assert result.ppl_answer[0] == pytest.approx(ppl_a, rel=1e-5)
    assert result.ppl_conditioned[0] == pytest.approx(ppl_c, rel=1e-5)
    assert result.ifd[0] == pytest.approx(ppl_c / ppl_a, rel=1e-5)


@pytest.mark.parametrize("chat", [True, False])
def test_ifd_scores_the_text_sft_trains_on(tiny_model, chat):
    # The oracle is TRL's rendering of the prompt-completion row SFT trains on (sft.train's
    # to_prompt_completion). Kills: IFD on its own "Question:/Answer:" text while SFT uses the chat
    # template, or an answer scored without the end-of-turn tokens SFT learns.
    from trl.data_utils import apply_chat_template

    from sft.train import SFTScriptArguments, to_prompt_completion

    _, tokenizer = tiny_model
    row = {"question": "How many apples are left?", "answer": "She has 5 - 2 = 3 apples left.\n#### 3"}
    sft_row = to_prompt_completion(datasets.Dataset.from_list([row]),
                                   SFTScriptArguments(dataset="x", chat=chat), tokenizer)[0]
    rendered = apply_chat_template(sft_row, tokenizer) if chat else sft_row
    alone, conditioned = encode_pairs([row["question"]], [row["answer"]], tokenizer, IFDConfig(chat=chat))[0][0]
    completion_ids = tokenizer(rendered["completion"], add_special_tokens=False).input_ids
    assert tokenizer.decode(conditioned.ids) == rendered["prompt"] + rendered["completion"]
    assert alone.ids == completion_ids == conditioned.ids[-len(completion_ids):]


def test_truncation_keeps_the_answer_whole(tiny_model, gsm8k_rows):
    _, tokenizer = tiny_model
    prompts, answers = gsm8k_rows
    config = IFDConfig(max_length=120, chat=False, template="codeact")
    pairs, reasons = encode_pairs(prompts, answers, tokenizer, config)
    cut = 0
    for pair, answer, reason in zip(pairs, answers, reasons):
        answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
        if pair is None:  # only answers that cannot fit beside one prompt token are skipped
            assert reason.startswith("answer longer than max_length") and len(answer_ids) >= 119
            continue
        alone, conditioned = pair
        assert reason == "" and len(conditioned.ids) <= 120
        assert conditioned.ids[-len(answer_ids):] == answer_ids == alone.ids
        assert conditioned.start == len(conditioned.ids) - len(answer_ids) + 1
        cut += len(conditioned.ids) == 120
    assert cut > 0  # some prompts really were cut


def test_bad_rows_are_marked_reported_and_never_selected(tiny_model):
    model, tokenizer = tiny_model
    prompts = ["What is 2 + 3?", "", "What is 4 + 4?", "Why?", "What is 7 - 2?", "What is 9 * 9?"] * 3
    answers = ["2 + 3 = 5\n#### 5", "#### 1", "", "x " * 900, "7 - 2 = 5\n#### 5", "9 * 9 = 81\n#### 81"] * 3
    ds = datasets.Dataset.from_dict({"question": prompts, "answer": answers})
    scored = cdas.score(ds, model, tokenizer, cdas.CDASConfig(num_clusters=2, ratio=1.0,
                                                              ifd=IFDConfig(max_length=256)), progress=False)
    reasons = scored["skip_reason"]
    assert reasons[1] == "empty prompt" and reasons[2] == "empty answer"
    assert reasons[3].startswith("answer longer than max_length")
    assert scored["cluster"][1] == -1 and math.isnan(scored["ifd"][2])
    for method in cdas.METHODS:
        chosen = cdas.select(scored, 1.0, method)
        assert all(r == "" for r in chosen["skip_reason"]), method
    report = cdas.report(scored, cdas.select(scored, 1.0), 1.0, "cdas")
    assert report["skipped"] == 9 and {r["row"] for r in report["skipped_rows"]} == {
        i for i, r in enumerate(reasons) if r}


def test_cdas_keeps_the_top_share_of_every_cluster():
    rng = np.random.default_rng(0)
    ifd = rng.uniform(0.7, 1.2, size=500)
    ifd[rng.choice(500, 20, replace=False)] = np.nan
    clusters = rng.integers(0, 7, size=500)
    for ratio in (0.1, 0.4, 1.0):
        kept = cdas.cdas_indices(ifd, clusters, ratio)
        assert np.all(ifd[kept] < 1)
        for c in range(7):
            eligible = np.flatnonzero((clusters == c) & (ifd < 1))
            mine = kept[clusters[kept] == c]
            assert len(mine) == math.floor(ratio * len(eligible))
            rest = np.setdiff1d(eligible, mine)
            if len(mine) and len(rest):
                assert ifd[mine].min() >= ifd[rest].max()  # highest IFD (still < 1) first


def _scored(n=60):
    rng = np.random.default_rng(1)
    return datasets.Dataset.from_dict({
        "question": [f"q{i}" for i in range(n)], "answer": [f"a{i}" for i in range(n)],
        "ifd": rng.uniform(0.8, 1.1, n).tolist(), "ppl_answer": [2.0] * n, "ppl_conditioned": [2.0] * n,
        "cluster": rng.integers(0, 3, n).tolist(), "response_tokens": rng.integers(5, 200, n).tolist(),
        "skip_reason": [""] * n,
    })


def test_baselines_take_as_many_rows_as_cdas():
    scored = _scored()
    n = len(cdas.select(scored, 0.5))
    by_length = cdas.select(scored, 0.5, "length")
    assert len(by_length) == len(cdas.select(scored, 0.5, "ifd")) == len(cdas.select(scored, 0.5, "random")) == n
    assert min(by_length["response_tokens"]) >= sorted(scored["response_tokens"], reverse=True)[n - 1]
    assert cdas.select(scored, 0.5, "random", seed=3)["question"] == cdas.select(scored, 0.5, "random", seed=3)["question"]
    top_ifd = cdas.select(scored, 0.5, "ifd")["ifd"]
    assert max(top_ifd) < 1 and min(top_ifd) == sorted(v for v in scored["ifd"] if v < 1)[-n]


@pytest.mark.parametrize("bad, message", [
    (dict(ratio=0.0), "ratio must be in \\(0, 1\\], got 0.0"),
    (dict(ratio=1.5), "ratio must be in \\(0, 1\\], got 1.5"),
    (dict(num_clusters=0), "num_clusters must be at least 1"),
])
def test_bad_config_values_are_named(bad, message):
    with pytest.raises(BadInputError, match=message):
        cdas.CDASConfig(**bad)


def test_more_clusters_than_rows_and_missing_columns(tiny_model):
    model, tokenizer = tiny_model
    ds = datasets.Dataset.from_dict({"question": ["a b", "c d"], "answer": ["1 2 3", "4 5 6"]})
    with pytest.raises(BadInputError, match="num_clusters=10 is more than the 2 rows"):
        cdas.score(ds, model, tokenizer, cdas.CDASConfig(), progress=False)
    with pytest.raises(BadInputError, match="response column 'solution' not found"):
        cdas.score(ds, model, tokenizer, cdas.CDASConfig(response_column="solution"), progress=False)
    with pytest.raises(BadInputError, match="run curate.cdas.score first"):
        cdas.select(ds, 0.4)


def test_a_count_takes_exactly_the_ratio_selection_of_that_size():
    # n = |CDAS(ratio m)| must give that very selection, for several m. Kills: n filled from the
    # global IFD ranking (ignores clusters), or clusters visited one after another.
    scored = _scored(400)
    for ratio in (0.1, 0.25, 0.5, 0.8, 1.0):
        by_ratio = cdas.select(scored, ratio)
        by_count = cdas.select(scored, n=len(by_ratio))
        assert by_count["question"] == by_ratio["question"], ratio
    clusters = np.asarray(cdas.select(scored, n=90)["cluster"])  # a count between two ratios: spread over clusters
    assert len(clusters) == 90 and len(set(clusters.tolist())) == 3
    with pytest.raises(BadInputError, match="only .* rows have IFD < 1"):
        cdas.select(scored, n=399)


def test_the_selector_object_scores_with_row_index_and_selects_by_count_or_ratio(tiny_model):
    from curate.selection import mark_selected

    model, tokenizer = tiny_model
    ds = datasets.Dataset.from_dict({"question": [f"What is {i} + {i}?" for i in range(30)],
                                     "answer": [f"{i} + {i} = {2 * i}\n#### {2 * i}" for i in range(30)]})
    selector = cdas.CDAS(model, tokenizer=tokenizer, num_clusters=3, progress=False)
    scored = selector.score(ds)
    assert scored["row_index"] == list(range(30))
    by_ratio, by_count = selector.select(scored, ratio=0.5), selector.select(scored, n=5)
    assert len(by_count) == 5 and len(by_ratio) == len(cdas.select(scored, 0.5))
    flagged = mark_selected(scored, by_count)
    assert len(flagged) == 30 and sorted(np.flatnonzero(flagged["selected"]).tolist()) == sorted(by_count["row_index"])
    with pytest.raises(BadInputError, match="exactly one of n"):
        selector.select(scored, n=5, ratio=0.5)


def _cli_args(gsm8k_dir, tiny_model_dir, out, cache, *extra):
    return ["select", "cdas", "--dataset", str(gsm8k_dir / "train.jsonl"), "--limit", "120", "--model",
            str(tiny_model_dir), "--out", str(out), "--num-clusters", "4", "--device", "cpu",
            "--cache-dir", str(cache), *extra]


def test_cli_writes_selection_scored_file_report_and_plot(tiny_model_dir, gsm8k_dir, tmp_path, capsys):
    out = tmp_path / "sel"
    assert main(_cli_args(gsm8k_dir, tiny_model_dir, out, tmp_path / "cache")) == 0
    rows = [json.loads(line) for line in (out / "selected.jsonl").read_text().splitlines()]
    scored = [json.loads(line) for line in (out / "scored.jsonl").read_text().splitlines()]
    report = json.loads((out / "report.json").read_text())
    assert (out / "ifd.png").read_bytes()[:4] == b"\x89PNG"
    assert len(rows) == report["selected"] > 0 and report["rows"] == 120
    assert sum(c["selected"] for c in report["clusters"]) == len(rows)
    assert all(r["ifd"] < 1 for r in rows) and {"cluster", "ppl_answer", "ppl_conditioned"} <= rows[0].keys()
    # the scored file: every row, its original index, its scores and whether it was selected
    assert [r["row_index"] for r in scored] == list(range(120))
    assert {r["row_index"] for r in scored if r["selected"]} == {r["row_index"] for r in rows}
    assert all("ifd" in r and "cluster" in r for r in scored)
    log = (out / "run.log").read_text()
    assert "[1/3] IFD: 120 samples" in log and "[3/3] select" in log and log.rstrip().split()[-4] == "done"
    assert len(list((tmp_path / "cache").glob("ifd-*.jsonl"))) == 1
    assert len(list((tmp_path / "cache").glob("embeddings-*.npy"))) == 1
    # the dataset card: where the selection came from, read back as the hub reads it
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(out / "README.md").data.to_dict()
    assert card["source_datasets"] == [str(gsm8k_dir / "train.jsonl")] and "curatekit" in card["tags"]
    meta = card["curatekit"]
    assert (meta["selector"], meta["method"], meta["rows"], meta["selected"]) == ("cdas", "cdas", 120, len(rows))
    assert meta["config"]["num_clusters"] == 4 and meta["scores"]["ifd"]["selected_mean"] < 1

    # --n: a count instead of the share per cluster
    assert main(_cli_args(gsm8k_dir, tiny_model_dir, tmp_path / "by_n", tmp_path / "cache", "--n", "7")) == 0
    assert len((tmp_path / "by_n" / "selected.jsonl").read_text().splitlines()) == 7
    assert main([*_cli_args(gsm8k_dir, tiny_model_dir, tmp_path / "bad", tmp_path / "cache"), "--ratio", "0"]) == 2
    assert "ratio must be in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cli_reruns_resume_and_cache_embeddings_but_refuse_another_configuration(
        tiny_model_dir, gsm8k_dir, tmp_path, capsys, monkeypatch):
    import sentence_transformers

    out, cache = tmp_path / "sel", tmp_path / "cache"
    assert main(_cli_args(gsm8k_dir, tiny_model_dir, out, cache)) == 0
    first = (out / "selected.jsonl").read_text()

    def no_encoder(*args, **kwargs):
        raise AssertionError("the embeddings were computed again")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", no_encoder)
    assert main(_cli_args(gsm8k_dir, tiny_model_dir, out, cache)) == 0  # same configuration: resumes from caches
    assert (out / "selected.jsonl").read_text() == first
    capsys.readouterr()
    assert main(_cli_args(gsm8k_dir, tiny_model_dir, out, cache, "--seed", "3")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another configuration (seed: 0 -> 3)" in err and "--overwrite" in err
    assert (out / "selected.jsonl").read_text() == first  # nothing touched
    assert main(_cli_args(gsm8k_dir, tiny_model_dir, out, cache, "--seed", "3", "--overwrite")) == 0

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(_cli_args(gsm8k_dir, tiny_model_dir, foreign, cache)) == 2
    assert "holds no curatekit run" in capsys.readouterr().err and sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert main(_cli_args(gsm8k_dir, tiny_model_dir, tmp_path / "sel.jsonl", cache)) == 2
    assert "output folder" in capsys.readouterr().err and not (tmp_path / "sel.jsonl").exists()


def test_the_registry_builds_every_selector_by_name():
    # The CLI and its help are built from curate.registry; a name there must build its class with
    # the config fields as keyword arguments, and a typo is one line with the closest name.
    from curate.learnalign import LearnAlign
    from curate.registry import SELECTORS, get_selector

    assert set(SELECTORS) == {"cdas", "learnalign"}
    cdas_selector = get_selector("cdas", model="m", num_clusters=3, method="length")
    assert isinstance(cdas_selector, cdas.CDAS) and cdas_selector.config.num_clusters == 3
    la = get_selector("learnalign", model="m", num_rollouts=4, method="learnability")
    assert isinstance(la, LearnAlign) and la.config.num_rollouts == 4 and la.method == "learnability"
    for name, entry in SELECTORS.items():
        assert get_selector(name, model="m").method == entry.methods[0]  # the selector's own rule first
    with pytest.raises(BadInputError, match="unknown selector 'cdsa' \\(did you mean 'cdas'\\?\\)"):
        get_selector("cdsa", model="m")
    with pytest.raises(BadInputError, match="unknown method 'gradient'"):
        get_selector("cdas", model="m", method="gradient")


# --push-to-hub without the network: offline or a malformed repository id is one line before any
# work; online (the hub calls replaced by recorders) the selected rows go up, then the card, which
# keeps the metadata `datasets` wrote and adds curatekit's. Kills a push of the scored pool, and a
# card that drops the hub's dataset_info or its own provenance.
def test_push_to_hub_sends_the_selection_and_its_card(tiny_model_dir, gsm8k_dir, tmp_path, capsys, monkeypatch):
    import datasets as hf_datasets
    from huggingface_hub import DatasetCard, constants

    args = ["select", "cdas", "--dataset", str(gsm8k_dir / "train.jsonl"), "--limit", "40", "--model",
            str(tiny_model_dir), "--num-clusters", "2", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    assert constants.HF_HUB_OFFLINE  # the suite runs offline
    assert curate_main_(args, tmp_path / "a", "--push-to-hub", "me/sel") == 2
    assert "offline mode" in capsys.readouterr().err and not (tmp_path / "a").exists()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert curate_main_(args, tmp_path / "b", "--push-to-hub", "noslash") == 2
    assert "expected a dataset repository id" in capsys.readouterr().err

    sent = {}
    monkeypatch.setattr(hf_datasets.Dataset, "push_to_hub",
                        lambda self, repo, **kw: sent.update(repo=repo, rows=self["row_index"]))
    monkeypatch.setattr(DatasetCard, "load", classmethod(
        lambda cls, repo, **kw: cls("---\ndataset_info:\n  splits:\n  - name: train\n---\n\nauto card\n")))
    monkeypatch.setattr(DatasetCard, "push_to_hub", lambda self, repo, **kw: sent.update(card_repo=repo, card=str(self)))
    assert curate_main_(args, tmp_path / "c", "--push-to-hub", "me/sel") == 0
    selected = [json.loads(line)["row_index"] for line in (tmp_path / "c" / "selected.jsonl").read_text().splitlines()]
    assert sent["repo"] == sent["card_repo"] == "me/sel" and sent["rows"] == selected and len(selected) < 40
    card = DatasetCard(sent["card"])
    assert card.data.to_dict()["dataset_info"]["splits"][0]["name"] == "train"  # the hub's metadata kept
    assert card.data.to_dict()["curatekit"]["selected"] == len(selected) and "auto card" not in card.text


def curate_main_(args: list[str], out, *extra: str) -> int:
    return main([*args, "--out", str(out), *extra])
