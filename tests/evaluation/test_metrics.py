"""Metrics against hand-computed values, a brute-force reference, and Student's t tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.evaluation import metrics
from pipeline.evaluation.metrics import (
    accuracy,
    average_precision,
    confusion_matrix,
    fold_summary,
    mean_average_precision,
    precision_recall_curve,
    retrieval_metrics,
    t_quantile,
)


def reference_ap(scores, relevant):
    """Textbook AP written as a plain loop: walk the ranking, average precision at every hit."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))  # ties: lower index first
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if relevant[i]:
            hits += 1
            total += hits / rank
    return total / hits if hits else math.nan


# -----------------------------------------------------------------------------
# accuracy


def test_accuracy_from_logits_ties_pick_lowest_class():
    logits = [[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]]  # last row ties -> class 0, which is wrong
    assert accuracy(logits, [1, 0, 1]) == pytest.approx(2 / 3)


def test_accuracy_from_labels_and_torch():
    assert accuracy(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2])) == 0.75
    assert accuracy(torch.eye(3)[[0, 1, 2, 0, 1]], [0, 1, 2, 0, 1]) == 1.0


def test_accuracy_rejects_bad_shapes():
    with pytest.raises(ValueError):
        accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError):
        accuracy(np.zeros((0,)), np.zeros((0,)))


# -----------------------------------------------------------------------------
# average precision


def test_ap_hand_computed():
    # relevant at ranks 1 and 3: (1/1 + 2/3) / 2
    assert average_precision([0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 0, 0]) == pytest.approx(5 / 6)


def test_ap_perfect_and_reversed():
    assert average_precision([4, 3, 2, 1], [1, 1, 0, 0]) == 1.0
    # relevant items ranked last (3 and 4): (1/3 + 2/4) / 2
    assert average_precision([4, 3, 2, 1], [0, 0, 1, 1]) == pytest.approx(5 / 12)


def test_ap_ties_break_by_index():
    assert average_precision([0.5, 0.5, 0.5], [0, 0, 1]) == pytest.approx(1 / 3)
    assert average_precision([0.5, 0.5, 0.5], [1, 0, 0]) == 1.0
    # tie only between items 1 and 2; item 2 is relevant and ranks after item 1
    assert average_precision([0.9, 0.4, 0.4, 0.1], [0, 0, 1, 1]) == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_ap_without_positives_is_nan():
    assert math.isnan(average_precision([0.3, 0.2], [0, 0]))


def test_ap_rejects_nan_scores():
    with pytest.raises(ValueError):
        average_precision([0.3, float("nan")], [1, 0])


def test_ap_accepts_torch():
    assert average_precision(torch.tensor([0.1, 0.9]), torch.tensor([True, False])) == pytest.approx(0.5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=1, max_size=25))
def test_ap_matches_reference_loop(items):
    scores = [float(s) for s, _ in items]  # small integer scores: many ties
    relevant = [r for _, r in items]
    expected = reference_ap(scores, relevant)
    got = average_precision(scores, relevant)
    assert (math.isnan(expected) and math.isnan(got)) or got == pytest.approx(expected)


# -----------------------------------------------------------------------------
# AudioSet mAP


def test_map_skips_classes_without_positives():
    scores = np.array([[0.9, 0.5, 0.2], [0.1, 0.5, 0.4], [0.8, 0.5, 0.6], [0.3, 0.5, 0.1]])
    targets = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0]])
    # class 0: positives ranked 1 and 3 -> 5/6; class 1 has none (left out); class 2: positive ranked 2 -> 1/2
    assert mean_average_precision(scores, targets) == pytest.approx((5 / 6 + 1 / 2) / 2)


def test_map_all_classes_empty_raises():
    with pytest.raises(ValueError):
        mean_average_precision(np.ones((3, 2)), np.zeros((3, 2)))


def test_map_chunking_does_not_change_result(monkeypatch):
    rng = np.random.default_rng(0)
    scores, targets = rng.normal(size=(40, 7)), rng.random((40, 7)) < 0.3
    full = mean_average_precision(scores, targets)
    monkeypatch.setattr(metrics, "_CHUNK", 2)
    assert mean_average_precision(scores, targets) == pytest.approx(full, abs=1e-15)
    per_class = [reference_ap(list(scores[:, k]), list(targets[:, k])) for k in range(7)]
    assert full == pytest.approx(np.nanmean(per_class))


# -----------------------------------------------------------------------------
# retrieval


def test_retrieval_hand_computed():
    sim = [
        [0.9, 0.1, 0.5, 0.3],  # top item relevant; hits at ranks 1, 2 -> AP 1; R@1 = 1/2
        [0.2, 0.8, 0.1, 0.7],  # top item not relevant; hits at ranks 2, 3 -> AP (1/2 + 2/3)/2
        [0.5, 0.5, 0.5, 0.5],  # nothing relevant: left out
        [0.3, 0.3, 0.3, 0.3],  # all tied: item 0 ranks first (not relevant), item 1 second -> AP 1/2
    ]
    rel = [[1, 0, 1, 0], [1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0]]
    out = retrieval_metrics(sim, np.array(rel, bool))
    assert set(out) == {"p1", "r1", "map"}
    assert out["p1"] == pytest.approx(1 / 3)
    assert out["r1"] == pytest.approx((1 / 2) / 3)
    assert out["map"] == pytest.approx((1 + 7 / 12 + 1 / 2) / 3)


def test_retrieval_perfect_and_reversed():
    rel = np.eye(5, dtype=bool)
    assert retrieval_metrics(np.eye(5), rel) == {"p1": 1.0, "r1": 1.0, "map": 1.0}
    worst = retrieval_metrics(1 - np.eye(5), rel)  # the one relevant item always ranks last
    assert worst["p1"] == 0.0 and worst["r1"] == 0.0 and worst["map"] == pytest.approx(1 / 5)


def test_retrieval_no_relevant_at_all_raises():
    with pytest.raises(ValueError):
        retrieval_metrics(np.ones((2, 3)), np.zeros((2, 3), bool))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_retrieval_properties(q, g, seed):
    rng = np.random.default_rng(seed)
    sim = rng.integers(0, 3, size=(q, g)).astype(float)  # coarse: ties are common
    rel = rng.random((q, g)) < 0.4
    rel[0, rng.integers(g)] = True  # at least one answerable query
    out = retrieval_metrics(torch.from_numpy(sim), torch.from_numpy(rel))
    assert 0 <= out["r1"] <= out["p1"] <= 1  # with one top item, R@1 can never exceed P@1
    valid = rel.any(axis=1)
    aps = [reference_ap(list(sim[i]), list(rel[i])) for i in range(q) if valid[i]]
    assert out["map"] == pytest.approx(np.mean(aps))


# -----------------------------------------------------------------------------
# fold summaries and Student's t


@pytest.mark.parametrize(
    "df, p, expected",  # two-sided 95% (p = 0.975) and 99% (p = 0.995) critical values of printed t tables
    [(1, 0.975, 12.706), (2, 0.975, 4.303), (3, 0.975, 3.182), (4, 0.975, 2.776), (5, 0.975, 2.571),
     (6, 0.975, 2.447), (7, 0.975, 2.365), (8, 0.975, 2.306), (9, 0.975, 2.262), (10, 0.975, 2.228),
     (15, 0.975, 2.131), (20, 0.975, 2.086), (29, 0.975, 2.045), (30, 0.975, 2.042), (40, 0.975, 2.021),
     (60, 0.975, 2.000), (120, 0.975, 1.980), (1, 0.995, 63.657), (4, 0.995, 4.604), (9, 0.995, 3.250)],
)
def test_t_quantile_matches_tables(df, p, expected):
    assert t_quantile(df, p) == pytest.approx(expected, abs=6e-4)


def test_t_quantile_tends_to_normal_and_rejects_bad_input():
    assert t_quantile(10_000) == pytest.approx(1.95996, abs=1e-3)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError):
            t_quantile(bad)
    with pytest.raises(ValueError):
        t_quantile(5, 0.4)


def test_fold_summary_values():
    s = fold_summary([0.8, 0.9])
    assert s["n"] == 2 and s["mean"] == pytest.approx(0.85)
    assert s["std"] == pytest.approx(math.sqrt(0.005))  # ddof = 1
    assert s["ci95"] == pytest.approx(12.7062 * math.sqrt(0.005) / math.sqrt(2), rel=1e-4)
    five = fold_summary([0.9, 0.8, 0.85, 0.95, 0.7])
    assert five["ci95"] == pytest.approx(2.7764 * np.std([0.9, 0.8, 0.85, 0.95, 0.7], ddof=1) / math.sqrt(5), rel=1e-4)


def test_fold_summary_single_and_empty():
    s = fold_summary([0.7])
    assert s["mean"] == 0.7 and s["std"] == 0.0 and s["n"] == 1 and math.isnan(s["ci95"])
    with pytest.raises(ValueError):
        fold_summary([])
    with pytest.raises(ValueError):
        fold_summary([0.5, float("nan")])


def test_eleven_point_precision_recall_curve():
    # one query, gallery ranked r r . r .  (relevant at ranks 1, 2, 4): precisions 1, 1, 2/3, 3/4, 3/5
    sim = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]])
    rel = np.array([[1, 1, 0, 1, 0]], bool)
    curve = precision_recall_curve(sim, rel)
    assert len(curve) == 11
    # recall 1/3 at rank 1, 2/3 at rank 2, 1 at rank 4: interpolated precision is the best at >= each level
    assert curve[:7] == pytest.approx([1.0] * 7) and curve[7:] == pytest.approx([0.75] * 4)
    # a second query with nothing relevant is left out, as in retrieval_metrics
    both = precision_recall_curve(np.vstack([sim, sim]), np.vstack([rel, np.zeros((1, 5), bool)]))
    assert both == pytest.approx(curve)
    with pytest.raises(ValueError, match="no query has a relevant"):
        precision_recall_curve(sim, np.zeros((1, 5), bool))


def test_confusion_matrix_counts_true_by_predicted():
    assert confusion_matrix([0, 2, 2, 1], [0, 2, 1, 1], 3) == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
