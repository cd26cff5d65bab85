"""Metrics: accuracy, average precision (AP / AudioSet mAP), retrieval scores (P@1, R@1, mAP), fold summaries.

Everything returns plain Python floats as fractions in [0, 1]; the tables turn them into percentages.
Inputs may be numpy arrays, torch tensors or nested lists. Precise definitions: docs/METRICS.md.

Ranking convention, shared by AP and retrieval: items are sorted by descending score with a *stable* sort, so
items with equal scores keep their index order (lower index ranks first). The result is deterministic, but
with ties it depends on item order; AP is then neither the optimistic nor the pessimistic bound but the
value for that order. Real model scores (float similarities) almost never tie.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

# Queries (or classes) are ranked in chunks so that a (Q, G) similarity matrix for AudioSet (~20k x 20k)
# never needs a full int64 argsort copy in memory at once.
_CHUNK = 256


def _np(x: Any) -> np.ndarray:
    # torch tensors may live on the GPU or carry grad; numpy is enough for counting ranks.
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


# -----------------------------------------------------------------------------
# classification


def accuracy(logits_or_pred: Any, target: Any) -> float:
    """Top-1 accuracy. `logits_or_pred` is (N, K) scores (argmax taken; ties -> lowest class index) or (N,) labels."""
    pred, target = _np(logits_or_pred), _np(target)
    if pred.ndim == target.ndim + 1:
        pred = pred.argmax(axis=-1)  # numpy returns the first maximum, so ties are deterministic
    if pred.shape != target.shape:
        raise ValueError(f"accuracy: predictions {pred.shape} do not match targets {target.shape}")
    if pred.size == 0:
        raise ValueError("accuracy: no samples")
    return float((pred == target).mean())


# -----------------------------------------------------------------------------
# average precision


def _ap_rows(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Non-interpolated AP of each row of (R, N) scores vs (R, N) bool relevance; NaN for rows without positives."""
    if scores.shape != relevant.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and relevance {relevant.shape} must be equal 2-D shapes")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN: a NaN has no rank")
    relevant = relevant.astype(bool)
    n = scores.shape[1]
    ranks = np.arange(1, n + 1, dtype=np.float64)
    out = np.empty(scores.shape[0], dtype=np.float64)
    for start in range(0, scores.shape[0], _CHUNK):
        s, r = scores[start : start + _CHUNK], relevant[start : start + _CHUNK]
        order = np.argsort(-s, axis=1, kind="stable")  # descending score, ties in index order
        hits = np.take_along_axis(r, order, axis=1)
        precision_at_k = np.cumsum(hits, axis=1) / ranks  # precision of the top k, for every k
        n_pos = hits.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 -> NaN is exactly "undefined"
            out[start : start + _CHUNK] = (precision_at_k * hits).sum(axis=1) / n_pos
    return out


def average_precision(scores: Any, relevant: Any) -> float:
    """AP of one ranking: mean of precision@k over the ranks k of the relevant items.

    `scores` (N,), `relevant` (N,) bool. Returns NaN when nothing is relevant (AP is undefined there; callers
    averaging APs leave such rankings out, see `mean_average_precision` and `retrieval_metrics`).
    """
    scores, relevant = _np(scores), _np(relevant)
    if scores.ndim != 1:
        raise ValueError(f"average_precision expects 1-D scores, got {scores.shape}")
    return float(_ap_rows(scores[None], relevant[None])[0])


def mean_average_precision(scores: Any, targets: Any) -> float:
    """AudioSet mAP: macro mean over classes of the AP of ranking all N clips by that class's score.

    `scores` (N, K), `targets` (N, K) multi-hot. Classes without a positive clip have no AP and are left out
    (the AudioSet eval split lacks a few classes); raises if no class has a positive.
    """
    scores, targets = _np(scores), _np(targets)
    if scores.ndim != 2:
        raise ValueError(f"mean_average_precision expects (N, K) scores, got {scores.shape}")
    ap = _ap_rows(scores.T, targets.T)  # one row per class: rank the clips
    if np.isnan(ap).all():
        raise ValueError("mean_average_precision: no class has a positive item")
    return float(np.nanmean(ap))


# -----------------------------------------------------------------------------
# retrieval (querying, paper Table 4)


def retrieval_metrics(similarity: Any, relevance: Any) -> dict[str, float]:
    """P@1, R@1 and mAP of ranking a gallery for every query.

    `similarity` (Q, G), higher = closer; `relevance` (Q, G) bool (e.g. query and item share >= 1 label).
    Per query q with n_q >= 1 relevant items, rank the gallery by descending similarity (stable) and take
      P@1_q = [top item relevant],  R@1_q = [top item relevant] / n_q,  AP_q = average_precision.
    All three are averaged over the queries with n_q >= 1; a query with nothing relevant cannot be answered
    right, so it would only measure the gallery, not the model. Note R@1_q <= P@1_q for every query.
    """
    sim, rel = _np(similarity), _np(relevance).astype(bool)
    if sim.ndim != 2 or sim.shape != rel.shape:
        raise ValueError(f"similarity {sim.shape} and relevance {rel.shape} must be equal (Q, G) shapes")
    ap = _ap_rows(sim, rel)
    # the top item is the first index of the maximum: the same stable tie-break as the AP ranking
    top_hit = rel[np.arange(sim.shape[0]), sim.argmax(axis=1)] if sim.shape[1] else np.zeros(0, bool)
    n_rel = rel.sum(axis=1)
    valid = n_rel > 0
    if not valid.any():
        raise ValueError("retrieval_metrics: no query has a relevant gallery item")
    return {
        "p1": float(top_hit[valid].mean()),
        "r1": float((top_hit[valid] / n_rel[valid]).mean()),
        "map": float(ap[valid].mean()),
    }


RECALL_LEVELS = tuple(i / 10 for i in range(11))


def precision_recall_curve(similarity: Any, relevance: Any) -> list[float]:
    """Interpolated precision at recall 0, 0.1, ..., 1 (the 11-point curve), averaged over the queries that
    have a relevant item: at each level, the best precision reached at that recall or beyond."""
    sim, rel = _np(similarity), _np(relevance).astype(bool)
    valid = rel.sum(axis=1) > 0
    sim, rel = sim[valid], rel[valid]
    if not len(sim):
        raise ValueError("precision_recall_curve: no query has a relevant gallery item")
    order = np.argsort(-sim, axis=1, kind="stable")
    hits = np.take_along_axis(rel, order, axis=1)
    found = np.cumsum(hits, axis=1)
    precision = found / np.arange(1, sim.shape[1] + 1)
    recall = found / hits.sum(axis=1, keepdims=True)
    curve = []
    for level in RECALL_LEVELS:
        reached = np.where(recall >= level - 1e-12, precision, 0.0)  # (Q, G): precision where recall >= level
        curve.append(float(reached.max(axis=1).mean()))
    return curve


def confusion_matrix(pred: Any, target: Any, num_classes: int) -> list[list[int]]:
    """counts[true][predicted]."""
    pred, target = _np(pred).astype(np.int64).reshape(-1), _np(target).astype(np.int64).reshape(-1)
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (target, pred), 1)
    return counts.tolist()


# -----------------------------------------------------------------------------
# cross-validation summaries


def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer df: the finite series of Abramowitz & Stegun 26.7.3/26.7.4."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:  # odd: (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)), up to cos^(df-3)
        term, series = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            series += term
        return 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * series)
    # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...), up to cos^(df-2)
    term, series = 1.0, 1.0
    for k in range(1, df // 2):
        term *= c2 * (2 * k - 1) / (2 * k)
        series += term
    return math.sin(theta) * series


def t_quantile(df: int, p: float = 0.975) -> float:
    """Quantile of Student's t distribution, p in (0.5, 1), integer df >= 1 (exact series + bisection, no scipy)."""
    if int(df) != df or df < 1:
        raise ValueError(f"t_quantile: df must be a positive integer, got {df}")
    if not 0.5 < p < 1.0:
        raise ValueError(f"t_quantile: p must lie in (0.5, 1), got {p}")
    df, mass = int(df), 2.0 * p - 1.0  # P(|T| < t) = 2p - 1 by symmetry
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, df) < mass:  # the mass grows with t: bracket, then bisect
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_two_sided_mass(mid, df) < mass:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


def fold_summary(values: Iterable[float]) -> dict[str, float]:
    """Mean, sample std (ddof=1; 0 for one value), count and 95% CI half-width t_{0.975,n-1} * std / sqrt(n).

    The CI of a single value does not exist: ci95 is NaN for n = 1.
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("fold_summary: no values")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"fold_summary: non-finite value in {vals}")
    n = len(vals)
    mean = math.fsum(vals) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    ci95 = t_quantile(n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "std": std, "n": n, "ci95": ci95}
