"""method=auto (`AutoSelect`): a hand-worked leave-one-out choice among three candidates, the tie and
fallback rules, the shared-products engine against fitting every candidate per fold, the choice made
without the query rows, the episode columns and shares, the across-methods [cv] choice of
protocol=paper, the configs, and the bench smoke run."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from calm.errors import ConfigError
from calm.methods import CALM, GRW, SAV, Concat, TopKSoft
from calm.protocols import Episode
from calm.reports.episodic import evaluate
from calm.reports.selections import selection_notes, selection_shares
from calm.run.job import build_methods
from calm.run.tracking import NullTracker, write_results
from calm.selection import AutoSelect
from calm.selection.auto import auto_folds, choice_across_methods
from calm.selection.cross_validation import fold_seed
from calm.testing.synthetic import synthetic_split
from tests.cli import compose_config, load_script

E0, E1 = [1.0, 0.0], [0.0, 1.0]


def hand_split() -> tuple[torch.Tensor, torch.Tensor]:
    """3 heads x 2 dims, clips 0-2 of class 0 and 3-5 of class 1. Each head puts a clip at E0 (it votes
    class 0) or E1 (class 1): in every leave-one-out fold each class's prototype still leans to its own
    direction, so a head's vote on a clip never depends on the fold. R = right, W = wrong:

        clip    0  1  2 | 3  4  5
        head 0  R  R  W | R  R  R
        head 1  R  R  R | R  R  W
        head 2  R  W  R | W  R  R
    """
    h0 = [E0, E0, E1, E1, E1, E1]
    h1 = [E0, E0, E0, E1, E1, E0]
    h2 = [E0, E1, E0, E0, E1, E1]
    return torch.tensor([h0, h1, h2]).permute(1, 0, 2).contiguous(), torch.tensor([0, 0, 0, 1, 1, 1])


# Leave-one-out by hand (6 clips <= leave_one_out_up_to: 6 folds, one clip held out in each):
# - sav_top1, SAV(top_k=1): the head right on most of the 5 fit clips (ties: lower index) predicts.
#   Held clip 0: heads score 4, 4, 3 -> head 0, right. 1: 4, 4, 4 -> head 0, right. 2: 5, 4, 3 -> head 0,
#   WRONG. 3: 4, 4, 4 -> head 0, right. 4: 4, 4, 3 -> head 0, right. 5: 4, 5, 3 -> head 1, WRONG. 4/6.
# - calm_sharp, CALM(tau=0.01, tau_w=0.25): posteriors are one-hot (cosine gaps >= 0.26 = 26 tau), so
#   margin_clamped r_{j,c} = share of the fit clips of c head j gets right; w_{j,c} ∝ r^4 per class;
#   score_c = sum of w_{j,c} over the heads voting c. Held clip 2 (head 0 votes 1): r_{.,0} = (1, 1, .5)
#   -> w_{.,0} = (16, 16, 1)/33; r_{.,1} = (1, 2/3, 2/3) -> w_{0,1} = 81/113; score_0 = 17/33 = .515 <
#   score_1 = .717: WRONG. Clip 5 is the mirror image: WRONG. Held clip 1 (head 2 votes 1):
#   w_{.,0} = (1, 16, 16)/33, score_0 = 17/33 > score_1 = w_{2,1} = 16/113: right; clip 3 mirrors it;
#   clips 0 and 4 are unanimous. 4/6.
# - sav_all, SAV(top_k=None): majority of the 3 heads; every clip has at most one wrong head. 6/6.
HAND_LOO = {"sav_top1": 100 * 4 / 6, "calm_sharp": 100 * 4 / 6, "sav_all": 100.0}


def hand_candidates() -> dict:
    return {"sav_top1": SAV(top_k=1), "calm_sharp": CALM(tau=0.01, tau_w=0.25), "sav_all": SAV(top_k=None)}


def test_hand_worked_leave_one_out_picks_the_best_and_predicts_as_it_refitted() -> None:
    support, labels = hand_split()
    auto = AutoSelect(hand_candidates()).fit(support, labels)
    record = auto.selection_
    assert record["selected_by"] == "leave_one_out" and record["folds"] == 6
    assert record["cv_accuracy"] == pytest.approx(HAND_LOO)
    assert auto.selected_ == "sav_all"
    # query 0 looks like clip 2 (head 0 votes 1, heads 1 and 2 vote 0): refitted on all six clips,
    # sav_top1 trusts head 0 (5 of 6 right, tie with head 1 to the lower index) and says 1; the majority says 0
    query = torch.tensor([[E1, E0, E0], [E1, E1, E0], [E0, E0, E1]])
    expected = SAV(top_k=None).fit(support, labels)
    assert auto.predict(query).tolist() == expected.predict(query).tolist() == [0, 1, 0]
    assert torch.equal(auto.predict_scores(query), expected.predict_scores(query))
    assert SAV(top_k=1).fit(support, labels).predict(query)[0] == 1, "the query must tell the candidates apart"


def test_ties_go_to_the_candidate_listed_first() -> None:
    """CALM(tau=0.01, tau_w=1) is right on all six held-out clips too (clip 2: w_{.,0} = (.4, .4, .2),
    score_0 = .6 > score_1 = 3/7), so it ties with sav_all: the first listed wins either way round."""
    support, labels = hand_split()
    hard = CALM(tau=0.01, tau_w=1.0)
    first = AutoSelect({"calm_hard": hard, "sav_all": SAV(top_k=None)}).fit(support, labels)
    assert first.selection_["cv_accuracy"] == {"calm_hard": 100.0, "sav_all": 100.0}
    assert first.selected_ == "calm_hard"
    assert AutoSelect({"sav_all": SAV(top_k=None), "calm_hard": hard}).fit(support, labels).selected_ == "sav_all"


def test_a_single_support_clip_per_class_uses_the_first_candidate_and_says_so() -> None:
    split = synthetic_split(heads=8, dim=4, classes=3, support_per_class=1, queries=2, seed=0)
    auto = AutoSelect({"calm": CALM(), "sav": SAV(top_k=2)}).fit(split.support, split.labels)
    assert auto.selected_ == "calm" and auto.selection_["selected_by"] == "default"
    assert "a class has 1 support clip" in auto.selection_["note"] and auto.selection_["cv_accuracy"] == {}
    assert torch.equal(auto.predict(split.query), CALM().fit(split.support, split.labels).predict(split.query))


def test_fold_rule_leave_one_out_up_to_the_limit_then_stratified_folds() -> None:
    labels = np.repeat(np.arange(4), 5)  # 20 clips
    fold, n_folds, how = auto_folds(labels, 4, 5, 20, seed=3)
    assert how == "leave_one_out" and n_folds == 20 and sorted(fold.tolist()) == list(range(20))
    fold, n_folds, how = auto_folds(labels, 4, 5, 19, seed=3)
    assert how == "stratified_folds" and n_folds == 5
    assert all(np.bincount(labels[fold == f], minlength=4).tolist() == [1, 1, 1, 1] for f in range(5))


def engine_candidates() -> dict:
    """Every kind the engine reads off shared products (SAV top_ks with both tie rules, CALM settings at
    two taus with top_k, shrinkage and another scheme, GRW), and four through fit/predict (among them the
    random-heads control and bf16 arithmetic, which the float32 shared products cannot give)."""
    return {
        "calm": CALM(),
        "calm_prob": CALM(tau=0.1, tau_w=1.0, reliability="prob", top_k=5, shrinkage=0.5),
        "calm_leak": CALM(tau=0.1, tau_w=2.0, top_k=3, top_k_mode="epsilon_leak", tie_break="random"),
        "sav": SAV(top_k=4),
        "sav_random": SAV(top_k=3, tie_break="random"),
        "sav_all": SAV(top_k=None),
        "grw": GRW(tau=0.1, tau_w=0.3, top_k=6, tie_break="random"),
        "concat": Concat(),
        "topk_soft": TopKSoft(top_k=5),
        "calm_holdout": CALM(reliability_split="leave_one_out"),
        "calm_random_heads": CALM(top_k=3, head_choice="random"),
        "calm_bf16": CALM(tau=0.1, arithmetic_dtype="bfloat16"),
    }


@pytest.mark.parametrize("per_class,up_to", [(3, 20), (6, 20)])  # leave-one-out (12 clips); 5 folds (24 clips)
def test_shared_products_give_every_candidates_own_fit_per_fold(per_class: int, up_to: int) -> None:
    split = synthetic_split(heads=12, dim=6, classes=4, support_per_class=per_class, queries=2, signal=0.6, seed=2)
    auto = AutoSelect(engine_candidates(), leave_one_out_up_to=up_to, cv_seed=4)
    tie_seed = 11
    auto.fit(split.support, split.labels, tie_seed=tie_seed)
    fold, n_folds, _ = auto_folds(split.labels.numpy(), 4, 5, up_to, fold_seed(4, tie_seed))
    assert n_folds == (12 if per_class == 3 else 5)
    for name, estimator in engine_candidates().items():
        correct = 0
        for f in range(n_folds):
            held = torch.from_numpy(fold == f)
            fitted = estimator.fit(split.support[~held], split.labels[~held], n_classes=4, tie_seed=tie_seed)
            correct += int((fitted.predict(split.support[held]) == split.labels[held]).sum())
        assert auto.selection_["cv_accuracy"][name] == pytest.approx(100 * correct / len(split.labels)), name
    assert len(set(auto.selection_["cv_accuracy"].values())) > 3, "the candidates must score differently"


def episodes_of(split, n: int) -> tuple[torch.Tensor, list[Episode]]:
    """`n` episodes over one feature table: support rows first, then query rows, drawn per episode."""
    features = torch.cat([split.support, split.query])
    n_support, classes = len(split.labels), split.n_classes
    rng = np.random.default_rng(0)
    episodes = []
    for e in range(n):
        support = np.concatenate(
            [rng.choice(np.flatnonzero(split.labels.numpy() == c), 3, replace=False) for c in range(classes)]
        )
        query = n_support + np.arange(len(split.query_labels))
        episodes.append(
            Episode(
                index=e,
                seed=100 + e,
                classes=np.arange(classes),
                support=support,
                support_labels=np.repeat(np.arange(classes), 3),
                query=query,
                query_labels=split.query_labels.numpy(),
            )
        )
    return features, episodes


def test_the_choice_never_reads_the_query_rows(tmp_path: Path) -> None:
    """Every query row replaced by NaN: each episode's choice and its cross-validated accuracy are the
    same (a choice by test accuracy, or any query read before it, would change or break them)."""
    split = synthetic_split(heads=16, dim=8, classes=3, support_per_class=6, queries=4, signal=0.5, seed=1)
    features, episodes = episodes_of(split, 6)
    blind = features.clone()
    blind[len(split.labels) :] = float("nan")
    methods = {"auto": AutoSelect({"calm": CALM(), "sav": SAV(top_k=2), "sav_all": SAV(top_k=None)})}
    _, rows = evaluate(episodes, features, methods, NullTracker())
    _, blind_rows = evaluate(episodes, blind, methods, NullTracker())
    columns = ("selected", "selected_by", "selected_cv_accuracy")
    assert [[r[c] for c in columns] for r in rows] == [[r[c] for c in columns] for r in blind_rows]
    assert len({r["selected"] for r in rows}) > 1, "the episodes must not all choose alike"


def test_episode_rows_shares_and_notes(tmp_path: Path) -> None:
    split = synthetic_split(heads=16, dim=8, classes=3, support_per_class=6, queries=4, signal=0.5, seed=1)
    features, episodes = episodes_of(split, 6)
    methods = {
        "sav": SAV(top_k=2),
        "auto": AutoSelect({"calm": CALM(), "sav": SAV(top_k=2), "never": SAV(top_k=1, tie_break="random")}),
    }
    _, rows = evaluate(episodes, features, methods, NullTracker())
    auto_rows = [r for r in rows if r["method"] == "auto"]
    for row, episode in zip(auto_rows, episodes, strict=True):  # the row is the winner's own fit and predict
        winner = methods["auto"].candidates[row["selected"]]
        support, query = features[torch.tensor(episode.support)], features[torch.tensor(episode.query)]
        pred = winner.fit(support, torch.tensor(episode.support_labels), n_classes=3, tie_seed=episode.seed).predict(
            query
        )
        assert row["accuracy"] == pytest.approx(100 * float((pred.numpy() == episode.query_labels).mean()))
    shares = selection_shares(rows, methods)
    assert list(shares) == ["auto"] and list(shares["auto"]["shares"]) == ["calm", "sav", "never"]
    assert sum(shares["auto"]["shares"].values()) == pytest.approx(1.0)
    won = {r["selected"] for r in auto_rows}
    assert shares["auto"]["shares"]["calm"] == pytest.approx(sum(r["selected"] == "calm" for r in auto_rows) / 6)
    assert shares["auto"]["selected_by"] == {"leave_one_out": 6}
    note = selection_notes(shares)[0]
    assert note.startswith("auto: ") and all(name in note for name in won) and "test clips unused" in note
    write_results(tmp_path, {}, [], rows)
    with open(tmp_path / "episodes.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["selected"] for r in table if r["method"] == "auto"] == [r["selected"] for r in auto_rows]
    assert all(r["selected"] == "" for r in table if r["method"] == "sav")


def test_across_methods_choice_is_the_best_cv_score_ties_first() -> None:
    records = {
        "sav": {"cv_score": 80.0, "setting": {"top_k": 5}, "test": {"accuracy": 70.0, "macro_f1": 69.0}},
        "calm": {"cv_score": 90.0, "setting": {"tau": 0.1}, "test": {"accuracy": 60.0, "macro_f1": 59.0}},
        "grw": {"cv_score": 90.0, "setting": {}, "test": {"accuracy": 99.0, "macro_f1": 99.0}},
    }
    choice = choice_across_methods(records)
    assert choice["selected"] == "calm" and choice["setting"] == {"method": "calm", "tau": 0.1}
    assert choice["test"]["accuracy"] == 60.0, "the test score never decides"
    assert choice["cv_scores"] == {"sav": 80.0, "calm": 90.0, "grw": 90.0}
    unscored = {name: {**r, "cv_score": None, "note": "a class has 1 support clip"} for name, r in records.items()}
    fallback = choice_across_methods(unscored)
    assert fallback["selected"] == "sav" and fallback["selected_by"] == "default"


def test_bad_candidates_fail_with_a_fix() -> None:
    with pytest.raises(ConfigError, match="non-empty mapping of candidates"):
        AutoSelect({})
    with pytest.raises(ConfigError, match="candidate 'x' is 3"):
        AutoSelect({"x": 3})
    with pytest.raises(ConfigError, match="folds must be an integer >= 2"):
        AutoSelect({"calm": CALM()}, folds=1)
    built = AutoSelect({"k5": {"_target_": "calm.methods.SAV", "top_k": 5}})
    assert isinstance(built.candidates["k5"], SAV) and built.candidates["k5"].top_k == 5


def test_method_auto_composes_its_candidates_from_the_estimator_configs(tmp_path: Path) -> None:
    cfg = compose_config(["method=auto"], tmp_path)
    methods = build_methods(cfg.method)
    assert list(methods) == ["sav", "calm", "auto"]
    auto = methods["auto"]
    assert list(auto.candidates)[0] == "calm", "CALM's default wins ties and is the fallback"
    assert vars(auto.candidates["calm"]) == vars(methods["calm"]) and auto.candidates["sav"].top_k == 20
    assert auto.candidates["calm_tau_w_1"].tau_w == 1.0 and auto.candidates["sav_k5"].top_k == 5
    paper = build_methods(compose_config(["method=auto", "protocol=paper"], tmp_path).method)
    assert paper["auto"].candidates["sav"].tie_break == "random", "the candidates follow the authors' modes"


def test_quick_bench_agrees_with_fitting_every_candidate_per_fold(capsys: pytest.CaptureFixture[str]) -> None:
    results = load_script("bench_auto").main(["--quick"])
    out = capsys.readouterr().out
    assert results["agree"] is True and results["ratio"] > 0 and results["folds"] == 5
    assert "ratio to CALM" in out and "agree with the from-scratch fits: yes" in out
