"""results/report.html: one self-contained page showing what a pipeline run produced.

Inputs, all written by earlier steps of the DAG:
  results_dir/table1..4.csv             the paper tables beside our numbers (tables.py)              required
  metrics_root/finetune/{ds}/{mode}/fold{k}.json   per-fold accuracy, per-epoch history, confusion matrix
  metrics_root/zeroshot/{ds}/{model}.json          per-fold zero-shot accuracy
  metrics_root/querying/{model}.json               11-point precision-recall curve of every query pair
  checkpoints {"standalone", "partial", "full", "clip"?: path}   meta["history"] of the AudioSet stages
Output: one HTML file. Figures are inline base64 PNGs (matplotlib, Agg canvas), with no scripts and no
external assets. The file is written atomically.

Missing optional inputs become a note in their section that names the file. A missing table CSV raises
FileNotFoundError. A file or table of another profile raises ProfileMismatchError, as it does for the tables.
If the profile is not `paper`, the page opens with a banner saying its numbers are not the paper's.
"""

from __future__ import annotations

import base64
import html
import io
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.evaluation.metrics import RECALL_LEVELS
from pipeline.io import read_json, write_text
from pipeline.reporting.tables import DATASET_NAME, TABLES, ProfileMismatchError, load_paper

SECTIONS = ("1. Tables", "2. Per-fold accuracy", "3. Training curves", "4. Confusion matrices",
            "5. Retrieval precision-recall", "Provenance")
FOLD_DATASETS = ("esc50", "us8k")
FT_MODES = ("standalone", "partial", "full")
ZS_MODELS = ("partial", "full")
PR_DATASETS = ("imagenet", "audioset", "us8k", "esc50")
STAGE_LABEL = {"clip": "CLIP heads (synthetic captions)", "standalone": "stage 1: ESResNeXt",
               "partial": "stage 2: AudioCLIP partial", "full": "stage 3: AudioCLIP full"}
# (table3 model, trained on target) of every bar group of the per-fold figure: where its paper value lives
FOLD_GROUPS = {
    ("finetune", "standalone"): ("Audio-Head (ESResNeXt, our training)", True),
    ("finetune", "partial"): ("AudioCLIP (partial training)", True),
    ("finetune", "full"): ("AudioCLIP (full training)", True),
    ("zeroshot", "partial"): ("AudioCLIP (partial training)", False),
    ("zeroshot", "full"): ("AudioCLIP (full training)", False),
}
DPI = 100
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")

# -----------------------------------------------------------------------------
# reading inputs


class Sources:
    """Every input the report opens, with the profile check of tables.py; the provenance footer lists them."""

    def __init__(self, profile: str):
        self.profile = profile
        self.read: list[Path] = []
        self.missing: list[Path] = []

    def _check(self, path: Path, found: Any) -> None:
        if found != self.profile:
            raise ProfileMismatchError(f"{path}: written by profile {found!r}, report requested for {self.profile!r}")

    def json(self, path: Path) -> dict | None:
        """The file's content, or None (recorded as missing) when it does not exist."""
        if not path.is_file():
            self.missing.append(path)
            return None
        data = read_json(path)
        self._check(path, data.get("profile") if isinstance(data, dict) else None)
        self.read.append(path)
        return data

    def table(self, path: Path) -> pd.DataFrame:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: table not found (run `python -m pipeline tables`)")
        df = pd.read_csv(path)
        found = set(df["profile"].astype(str)) if "profile" in df else {None}
        self._check(path, found.pop() if len(found) == 1 else sorted(found))
        self.read.append(path)
        return df

    def checkpoint_meta(self, path: Path) -> dict | None:
        if not path.is_file():
            self.missing.append(path)
            return None
        # weights_only + mmap: only `meta` is used, the tensors are never paged in
        meta = dict(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("meta", {}))
        if "profile" in meta:
            self._check(path, meta["profile"])
        self.read.append(path)
        return meta


def _fold_files(metrics_root: Path, ds: str) -> list[int]:
    """The folds of `ds` that any finetune or zero-shot file mentions (tables.py's rule for expected folds)."""
    found = {int(m.group(1)) for p in (metrics_root / "finetune" / ds).glob("*/fold*.json")
             if (m := re.fullmatch(r"fold(\d+)\.json", p.name))}
    for model in ZS_MODELS:
        path = metrics_root / "zeroshot" / ds / f"{model}.json"
        if path.is_file():
            found |= {int(k) for k in (read_json(path).get("metrics", {}).get("folds") or {})}
    return sorted(found)


def load_finetune(src: Sources, metrics_root: Path) -> dict[tuple[str, str], dict[int, dict]]:
    """{(dataset, mode): {fold: file content}} of every fine-tuning file present."""
    out = {}
    for ds in FOLD_DATASETS:
        folds = _fold_files(metrics_root, ds)
        for mode in FT_MODES:
            files = {k: src.json(metrics_root / "finetune" / ds / mode / f"fold{k}.json") for k in folds}
            out[ds, mode] = {k: d for k, d in files.items() if d is not None}
    return out


# -----------------------------------------------------------------------------
# html helpers


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _figure(draw: Callable[[Figure], None], size: tuple[float, float], alt: str) -> str:
    """An <img> with the figure drawn by `draw` as an inline PNG."""
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    draw(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


# -----------------------------------------------------------------------------
# 1. tables

FIELDS = {"paper": "paper", "measured": "measured", "std": "std", "ci95": "ci95", "n_folds": "folds",
          "paper_protocol": "paper protocol", "paper_protocol_std": "paper prot. std",
          "paper_protocol_ci95": "paper prot. ci95"}
_GROUPED = re.compile(r"(.+?)_(" + "|".join(sorted(FIELDS, key=len, reverse=True)) + r")")
TABLE1_COLUMNS = {"paper_5_epochs": "paper (5 epochs)", "paper_30_epochs": "paper (30 epochs)",
                  "measured": "measured", "measured_std": "std", "n_folds": "folds"}
GROUP_LABEL = {"partial": "partial training", "full": "full training", "us8k": "UrbanSound8K", "esc50": "ESC-50"}
RETRIEVAL_LABEL = {"p1": "P@1", "r1": "R@1", "map": "mAP"}


def _group_label(group: str) -> str:
    model, _, metric = group.partition("_")  # table4: partial_p1 -> "partial training P@1"
    if metric in RETRIEVAL_LABEL:
        return f"{GROUP_LABEL.get(model, model)} {RETRIEVAL_LABEL[metric]}"
    return GROUP_LABEL.get(group, group)


def _cell(value: Any, integer: bool = False) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)) or str(value) in ("True", "False"):
        return "yes" if str(value) == "True" else "no"
    if integer:
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.2f}"  # the tables round to 2 decimals: this shows every digit they hold
    return str(value)


def table_html(name: str, df: pd.DataFrame, paper: dict) -> str:
    """One table: identifying columns first, then a header group per model or dataset with its fields."""
    df = df.drop(columns=["profile"])
    if "status" not in df and len(paper["rows"]) == len(df):  # rows follow paper_tables.yaml in order
        df["status"] = [r.get("status", "") for r in paper["rows"]]
    ids, groups = [], {}
    for col in df.columns:
        m = None if name == "table1" else _GROUPED.fullmatch(col)
        if m:
            groups.setdefault(m.group(1), {})[m.group(2)] = col
        else:
            ids.append(col)
    columns, data = [], {}
    for col in ids:
        key = ("", TABLE1_COLUMNS.get(col, col.replace("_", " ").replace("status", "paper value status")))
        columns.append(key)
        data[key] = [_cell(v, integer=col == "n_folds") for v in df[col]]
    for group, fields in groups.items():
        for field in FIELDS:
            if field in fields:
                key = (_group_label(group), FIELDS[field])
                columns.append(key)
                data[key] = [_cell(v, integer=field == "n_folds") for v in df[fields[field]]]
    out = pd.DataFrame([[data[c][i] for c in columns] for i in range(len(df))],
                       columns=pd.MultiIndex.from_tuples(columns) if groups else [c[1] for c in columns])
    body = out.to_html(index=False, border=0, classes="table", escape=True)
    title = f'Table {name.removeprefix("table")}: {paper["caption"]}'
    return f'<h3>{_esc(title)}</h3>\n<div class="scroll">{body}</div>'


TABLES_NOTE = (
    "Values in %. measured: the strict protocol for fine-tuned cells (the last epoch; the held-out fold chooses "
    "nothing). paper protocol: the epoch that is best on the held-out fold (the released trainer's checkpoint "
    "choice; optimistic). std: sample standard deviation over the folds; ci95: half-width of the 95% Student-t "
    "interval of the mean (docs/METRICS.md). A dash marks an empty cell: a baseline we do not run, or a value "
    "without folds. Table 4 uses the standard P@1/R@1 definitions; the paper's are unknown, so compare its mAP "
    "columns only.")


def section_tables(tables: Mapping[str, pd.DataFrame]) -> str:
    paper = load_paper()
    return "\n".join([_note(TABLES_NOTE), *(table_html(n, df, paper[n]) for n, df in tables.items())])


# -----------------------------------------------------------------------------
# 2. per-fold accuracy


def _paper_value(table3: pd.DataFrame, ds: str, model: str, on_target: bool) -> float:
    target = table3["training_on_target"].astype(str).str.lower() == str(on_target).lower()
    rows = table3[(table3["model"] == model) & target]
    return float(rows.iloc[0][f"{ds}_paper"]) if len(rows) else float("nan")


def fold_accuracies(src: Sources, metrics_root: Path, finetune: Mapping, ds: str) -> tuple[dict, list[str]]:
    """{(kind, mode): {"acc": {fold: %}, "best": {fold: %}}} of every bar group, and notes on what is missing."""
    groups, notes = {}, []
    for mode in FT_MODES:
        files = finetune[ds, mode]
        groups["finetune", mode] = {
            "acc": {k: 100 * d["metrics"]["accuracy"] for k, d in files.items()},
            "best": {k: 100 * d["metrics"]["accuracy_best_epoch"] for k, d in files.items()
                     if "accuracy_best_epoch" in d["metrics"]},
        }
    for model in ZS_MODELS:
        path = metrics_root / "zeroshot" / ds / f"{model}.json"
        data = src.json(path)
        folds = (data or {}).get("metrics", {}).get("folds") or {}
        if data is None:
            notes.append(f"missing {path}")
        groups["zeroshot", model] = {"acc": {int(k): 100 * v for k, v in folds.items()}, "best": {}}
    return groups, notes


def _draw_folds(fig: Figure, groups: dict, paper: dict, ds: str) -> None:
    ax = fig.add_subplot()
    labelled: set[str] = set()

    def label(name: str) -> str | None:  # each legend entry once
        if name in labelled:
            return None
        labelled.add(name)
        return name

    for i, (key, g) in enumerate(groups.items()):
        folds = sorted(g["acc"])
        width = 0.8 / max(len(folds), 1)
        xs = [i + (j - (len(folds) - 1) / 2) * width for j in range(len(folds))]
        ax.bar(xs, [g["acc"][k] for k in folds], width * 0.9, color=COLORS[i], edgecolor="white", linewidth=0.3)
        best = [(x, g["best"][k]) for x, k in zip(xs, folds) if k in g["best"]]
        if best:
            ax.scatter(*zip(*best), marker="v", s=12, color="black", zorder=3,
                       label=label("best epoch (paper protocol)"))
        if folds:
            ax.hlines(np.mean([g["acc"][k] for k in folds]), i - 0.42, i + 0.42, colors="black", linestyles=":",
                      label=label("measured mean"))
        if not np.isnan(paper[key]):
            ax.hlines(paper[key], i - 0.45, i + 0.45, colors="red", linestyles="--", linewidth=1.5,
                      label=label("paper"))
    ax.set_xticks(range(len(groups)), [f"{'fine-tuned' if k == 'finetune' else 'zero-shot'}\n{m}"
                                       for k, m in groups])
    ax.set_ylim(0, 102)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{DATASET_NAME[ds]}: accuracy per fold (bars: folds in order)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)


def section_folds(src: Sources, metrics_root: Path, finetune: Mapping, table3: pd.DataFrame) -> str:
    parts = [_note("Fine-tuned bars: the last epoch (strict protocol). Red dashes: the paper's value of the row "
                   "(Table 3). Dotted: our mean over the folds.")]
    for ds in FOLD_DATASETS:
        groups, notes = fold_accuracies(src, metrics_root, finetune, ds)
        expected = _fold_files(metrics_root, ds)
        for mode in FT_MODES:
            lost = [f"fold{k}.json" for k in expected if k not in finetune[ds, mode]]
            if lost:
                notes.append(f"missing in {metrics_root / 'finetune' / ds / mode}: {', '.join(lost)}")
        parts.append(f"<h3>{_esc(DATASET_NAME[ds])}</h3>")
        parts += [_note(n) for n in notes]
        if not any(g["acc"] for g in groups.values()):
            parts.append(_note(f"no fold results for {ds} under {metrics_root}"))
            continue
        paper = {key: _paper_value(table3, ds, *FOLD_GROUPS[key]) for key in groups}
        parts.append(_figure(lambda fig: _draw_folds(fig, groups, paper, ds), (10, 3.8), f"{ds} accuracy per fold"))
    return "\n".join(parts)


# -----------------------------------------------------------------------------
# 3. training curves


def _draw_stages(fig: Figure, histories: dict[str, list[dict]]) -> None:
    axes = fig.subplots(1, len(histories), squeeze=False)[0]
    for ax, (stage, history) in zip(axes, histories.items()):
        ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], marker="o", markersize=3)
        ax.set_title(STAGE_LABEL.get(stage, stage), fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("training loss")


def _band(files: Mapping[int, dict], key: str) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """Per epoch: the mean, min and max of `key` over the folds whose history has that epoch."""
    by_epoch: dict[int, list[float]] = {}
    for data in files.values():
        for h in data.get("history") or []:
            if key in h:
                by_epoch.setdefault(int(h["epoch"]), []).append(float(h[key]))
    epochs = sorted(by_epoch)
    vals = [np.asarray(by_epoch[e]) for e in epochs]
    scale = 100.0 if key == "accuracy" else 1.0
    return epochs, *(scale * np.array([f(v) for v in vals]) for f in (np.mean, np.min, np.max))


def _draw_finetune(fig: Figure, finetune: Mapping) -> None:
    axes = fig.subplots(2, len(FOLD_DATASETS), squeeze=False, sharex="col")
    for col, ds in enumerate(FOLD_DATASETS):
        for row, key in enumerate(("loss", "accuracy")):
            ax = axes[row][col]
            for i, mode in enumerate(FT_MODES):
                epochs, mean, lo, hi = _band(finetune[ds, mode], key)
                if epochs:
                    ax.plot(epochs, mean, color=COLORS[i], label=mode)
                    ax.fill_between(epochs, lo, hi, color=COLORS[i], alpha=0.2, linewidth=0)
            ax.set_ylabel("training loss" if key == "loss" else "held-out accuracy (%)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(DATASET_NAME[ds])
                ax.legend(fontsize=7)
            else:
                ax.set_xlabel("epoch")


def section_curves(src: Sources, checkpoints: Mapping[str, Path], finetune: Mapping) -> str:
    parts = ["<h3>AudioSet stages</h3>"]
    histories, notes = {}, []
    for stage in sorted(checkpoints, key=lambda s: list(STAGE_LABEL).index(s) if s in STAGE_LABEL else 99):
        path = Path(checkpoints[stage])
        meta = src.checkpoint_meta(path)
        if meta is None:
            notes.append(f"{stage}: missing checkpoint {path}")
        elif not meta.get("history"):
            notes.append(f"{stage}: {path} has no training history (meta stage: {meta.get('stage', 'unknown')})")
        else:
            histories[stage] = meta["history"]
    parts += [_note(n) for n in notes]
    if histories:
        parts.append(_figure(lambda fig: _draw_stages(fig, histories), (3.2 * len(histories), 3),
                             "AudioSet stages: loss per epoch"))
    else:
        parts.append(_note("no AudioSet stage history to draw"))
    parts.append("<h3>Fine-tuning</h3>")
    parts.append(_note("Mean over the folds, band: min to max over the folds; accuracy on the held-out fold "
                       "after each epoch."))
    lacking = [f"{ds}/{mode}/fold{k}" for (ds, mode), files in finetune.items()
               for k, d in files.items() if not d.get("history")]
    if lacking:
        parts.append(_note(f"no per-epoch history in finetune/{', '.join(lacking)}"))
    if any(d.get("history") for files in finetune.values() for d in files.values()):
        parts.append(_figure(lambda fig: _draw_finetune(fig, finetune), (11, 6), "fine-tuning curves"))
    else:
        parts.append(_note("no fine-tuning history to draw"))
    return "\n".join(parts)


# -----------------------------------------------------------------------------
# 4. confusion matrices


def summed_confusion(files: Mapping[int, dict]) -> tuple[np.ndarray | None, list[str], list[int], list[str]]:
    """(counts summed over the folds that carry one, class names, those folds, notes)."""
    total, names, used, notes = None, [], [], []
    for k in sorted(files):
        data = files[k]
        if "confusion" not in data or "class_names" not in data:
            notes.append(f"fold {k} has no confusion matrix or class names")
            continue
        counts = np.asarray(data["confusion"], dtype=np.int64)
        if total is None:
            total, names = counts.copy(), list(data["class_names"])
        elif counts.shape != total.shape or list(data["class_names"]) != names:
            notes.append(f"fold {k}: classes differ from fold {used[0]}; left out")
            continue
        else:
            total += counts
        used.append(k)
    return total, names, used, notes


def _draw_confusion(fig: Figure, counts: np.ndarray, names: list[str], title: str) -> None:
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    font = 4 if len(names) > 20 else 7
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=font)
    ax.set_yticks(range(len(names)), names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04, label="fraction of the true class")


def section_confusion(finetune: Mapping, mode: str) -> str:
    parts = [_note(f"Fine-tuned {mode} model, last epoch of every fold, counts summed over the folds; each row "
                   f"is normalised to sum to 1.")]
    for ds in FOLD_DATASETS:
        parts.append(f"<h3>{_esc(DATASET_NAME[ds])}</h3>")
        counts, names, used, notes = summed_confusion(finetune[ds, mode])
        parts += [_note(f"finetune/{ds}/{mode}: {n}") for n in notes]
        if counts is None:
            parts.append(_note(f"no confusion matrix for {ds} ({mode})"))
            continue
        acc = 100.0 * np.trace(counts) / max(counts.sum(), 1)
        title = (f"{DATASET_NAME[ds]}, {mode}: folds {', '.join(map(str, used))}, {counts.sum()} clips, "
                 f"accuracy {acc:.2f}%")
        side = max(5.0, 0.17 * len(names) + 2.5)
        parts.append(_figure(lambda fig: _draw_confusion(fig, counts, names, title), (side + 1, side),
                             f"{ds} confusion matrix"))
    return "\n".join(parts)


# -----------------------------------------------------------------------------
# 5. retrieval precision-recall


def pr_curves(src: Sources, metrics_root: Path) -> tuple[dict[str, dict[tuple[str, str], list[float]]], list[str]]:
    """{dataset: {("<query>-><result>", model): 11 precisions}} and notes on what is missing."""
    curves: dict[str, dict[tuple[str, str], list[float]]] = {}
    notes = []
    for model in ZS_MODELS:
        path = metrics_root / "querying" / f"{model}.json"
        data = src.json(path)
        if data is None:
            notes.append(f"missing querying file {path}")
            continue
        lacking = []
        for key, scores in data.get("metrics", {}).items():
            curve = scores.get("pr_curve") if isinstance(scores, dict) else None
            if not isinstance(curve, list) or len(curve) != len(RECALL_LEVELS):
                lacking.append(key)
                continue
            ds, _, pair = key.partition("/")
            curves.setdefault(ds, {})[pair, model] = [float(p) for p in curve]
        if lacking:
            notes.append(f"{path}: no 11-point pr_curve for {', '.join(lacking)}")
    return curves, notes


def _pr_datasets(curves: Mapping) -> list[str]:
    return [d for d in PR_DATASETS if d in curves] + sorted(d for d in curves if d not in PR_DATASETS)


def _draw_pr(fig: Figure, curves: dict[str, dict[tuple[str, str], list[float]]]) -> None:
    datasets = _pr_datasets(curves)
    ncols = min(2, len(datasets))
    axes = fig.subplots(-(-len(datasets) // ncols), ncols, squeeze=False).ravel()
    for ax, ds in zip(axes, datasets):
        pairs = sorted({pair for pair, _ in curves[ds]})
        for (pair, model), curve in sorted(curves[ds].items()):
            ax.plot(RECALL_LEVELS, 100 * np.asarray(curve), color=COLORS[pairs.index(pair) % len(COLORS)],
                    linestyle="--" if model == "partial" else "-", marker=".", label=f"{pair} ({model})")
        ax.set_title(DATASET_NAME.get(ds, ds))
        ax.set_xlabel("recall")
        ax.set_ylabel("interpolated precision (%)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in axes[len(datasets):]:
        ax.set_axis_off()


def section_pr(src: Sources, metrics_root: Path) -> str:
    curves, notes = pr_curves(src, metrics_root)
    parts = [_note("11-point interpolated precision (mean over the queries with a relevant item). Dashed: "
                   "partial training, solid: full training.")]
    parts += [_note(n) for n in notes]
    if curves:
        rows = -(-len(curves) // 2)
        parts.append(_figure(lambda fig: _draw_pr(fig, curves), (11 if len(curves) > 1 else 5.5, 3.8 * rows),
                             "precision-recall curves"))
    else:
        parts.append(_note("no precision-recall curves to draw"))
    return "\n".join(parts)


# -----------------------------------------------------------------------------
# the page

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
.warning { background: #fff3cd; border: 2px solid #d39e00; padding: 0.8em 1em; font-size: 1.1em; }
.note { color: #555; font-size: 0.9em; }
.scroll { overflow-x: auto; }
table.table { border-collapse: collapse; font-size: 0.8em; margin-bottom: 1em; }
table.table th, table.table td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
table.table th { background: #f3f3f3; text-align: center; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
footer { margin-top: 3em; font-size: 0.85em; color: #444; }
"""

WARNING = ("This report was made with profile {profile!r}, not 'paper': these numbers come from the embedded smoke "
           "profile (synthetic data, tiny models) and are NOT the paper's numbers.")


def _section(title: str, body: str) -> str:
    anchor = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return f'<section id="{anchor}">\n<h2>{_esc(title)}</h2>\n{body}\n</section>'


def _footer(src: Sources, tables: Mapping[str, pd.DataFrame], profile: str, now: datetime) -> str:
    table_profiles = ", ".join(f"{n}: {'/'.join(sorted(set(df['profile'].astype(str))))}" for n, df in tables.items())
    read = "".join(f"<li>{_esc(p)}</li>" for p in src.read)
    missing = "".join(f"<li>{_esc(p)}</li>" for p in src.missing) or "<li>none</li>"
    return (f"<p>Profile: <b>{_esc(profile)}</b>. Tables' profile column: {_esc(table_profiles)}. "
            f"Generated {_esc(now.isoformat(timespec='seconds'))}.</p>\n"
            f"<details><summary>{len(src.read)} input files read</summary><ul>{read}</ul></details>\n"
            f"<details><summary>{len(src.missing)} optional input files missing</summary><ul>{missing}</ul></details>")


def render_report(results_dir: Path, metrics_root: Path, checkpoints: Mapping[str, Path], profile: str, *,
                  confusion_mode: str = "full", now: datetime | None = None) -> str:
    """The report as an HTML string (see write_report)."""
    results_dir, metrics_root = Path(results_dir), Path(metrics_root)
    src = Sources(profile)
    tables = {name: src.table(results_dir / f"{name}.csv") for name in TABLES}
    finetune = load_finetune(src, metrics_root)
    sections = [
        section_tables(tables),
        section_folds(src, metrics_root, finetune, tables["table3"]),
        section_curves(src, checkpoints, finetune),
        section_confusion(finetune, confusion_mode),
        section_pr(src, metrics_root),
    ]
    now = now or datetime.now(timezone.utc)
    warning = "" if profile == "paper" else \
        f'<p class="warning"><b>Warning.</b> {_esc(WARNING.format(profile=profile))}</p>'
    body = "\n".join(_section(t, b) for t, b in zip(SECTIONS, sections))
    footer = f"<footer>{_section(SECTIONS[-1], _footer(src, tables, profile, now))}</footer>"
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>AudioCLIP reproduction: report ({_esc(profile)})</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>AudioCLIP reproduction: run report</h1>\n<p>Profile: <b>{_esc(profile)}</b></p>\n{warning}\n"
            f"{body}\n{footer}\n</body>\n</html>\n")


def write_report(results_dir: Path, metrics_root: Path, checkpoints: dict[str, Path], out: Path, profile: str, *,
                 confusion_mode: str = "full", now: datetime | None = None) -> Path:
    """Write the self-contained HTML report of one run to `out` (atomically) and return `out`.

    results_dir: holds table1..4.csv (required). metrics_root: work/<profile>/metrics. checkpoints: stage name
    (standalone, partial, full, optionally clip) -> pipeline checkpoint. confusion_mode: the fine-tuning mode
    whose confusion matrices are shown. now: the generation time printed in the footer (default: now, UTC).
    """
    write_text(out, render_report(results_dir, metrics_root, checkpoints, profile,
                                  confusion_mode=confusion_mode, now=now))
    return Path(out)
