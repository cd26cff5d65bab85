"""Tables 1-4 of the paper, with our measured values beside the paper's.

Input: the per-job metric files of docs/DESIGN.md under work/<profile>/metrics (fractions in [0, 1]).
Output: one pandas DataFrame per table, one row per row of paper_tables.yaml in the same order, values as
percentages rounded to 2 decimals, and a `profile` column on every row.

Two rules keep the tables honest:
  - a missing metric file (or fold, or key) is an error naming it: a row we claim to reproduce never shows an
    empty measured cell silently;
  - every file must carry the requested `profile`: smoke or embedded numbers never end up in a paper table.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import yaml

from pipeline.evaluation.metrics import fold_summary
from pipeline.io import atomic_path, read_json

PAPER_YAML = Path(__file__).with_name("paper_tables.yaml")
TABLES = ("table1", "table2", "table3", "table4")

# paper dataset name <-> key used in metric file paths
DATASET_KEY = {"ImageNet": "imagenet", "AudioSet": "audioset", "UrbanSound8K": "us8k", "ESC-50": "esc50"}
DATASET_NAME = {v: k for k, v in DATASET_KEY.items()}
MODELS = ("partial", "full")  # AudioCLIP after partial / full training on AudioSet
RETRIEVAL = ("p1", "r1", "map")


class MetricsError(Exception):
    """The metric files cannot make a trustworthy table."""


class MissingMetricsError(MetricsError, FileNotFoundError):
    """A metric file, fold or key that a row needs does not exist."""


class ProfileMismatchError(MetricsError, ValueError):
    """A metric file was written by another profile than the one the table is built for."""


# -----------------------------------------------------------------------------
# reading metric files


class MetricFiles:
    """The metric files of one profile below `root`; every read checks the profile and the value range.

    Folds: `folds` maps a dataset key (us8k, esc50) to the fold ids that must all be present. Without it the
    expected folds are the union of the folds found for that dataset in any finetune/ or zeroshot/ file, so
    one job that did not finish shows up as a missing file instead of silently shifting a mean.
    """

    def __init__(self, root: str | Path, profile: str, folds: Mapping[str, Iterable[int]] | None = None):
        self.root, self.profile = Path(root), profile
        self.explicit_folds = {k: sorted(int(f) for f in v) for k, v in (folds or {}).items()}
        self._cache: dict[Path, dict] = {}

    def read(self, rel: str) -> dict:
        """The `metrics` dict of the file at root/rel."""
        path = self.root / rel
        if path not in self._cache:
            if not path.is_file():
                raise MissingMetricsError(f"missing metric file: {path}")
            data = read_json(path)
            if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
                raise MetricsError(f"{path}: no `metrics` object")
            if data.get("profile") != self.profile:
                raise ProfileMismatchError(
                    f"{path}: written by profile {data.get('profile')!r}, table requested for {self.profile!r}"
                )
            self._cache[path] = data
        return self._cache[path]["metrics"]

    def value(self, rel: str, key: str) -> float:
        metrics = self.read(rel)
        if key not in metrics:
            raise MissingMetricsError(f"{self.root / rel}: no metric {key!r}")
        return _fraction(metrics[key], f"{self.root / rel} [{key}]")

    def expected_folds(self, ds: str) -> list[int]:
        if ds in self.explicit_folds:
            return self.explicit_folds[ds]
        found: set[int] = set()
        for path in (self.root / "finetune" / ds).glob("*/fold*.json"):
            match = re.fullmatch(r"fold(\d+)\.json", path.name)
            if match:
                found.add(int(match.group(1)))
        for path in (self.root / "zeroshot" / ds).glob("*.json"):
            if not path.name.startswith("."):  # skip the atomic writers' temporary files
                found |= {int(k) for k in self._zeroshot_folds(path.relative_to(self.root).as_posix())}
        if not found:
            raise MissingMetricsError(
                f"no fold results for {ds} under {self.root}: expected finetune/{ds}/<mode>/fold<k>.json "
                f"and zeroshot/{ds}/<model>.json"
            )
        return sorted(found)

    def _zeroshot_folds(self, rel: str) -> dict:
        folds = self.read(rel).get("folds")
        if not isinstance(folds, dict) or not folds:
            raise MetricsError(f"{self.root / rel}: `metrics.folds` must be a non-empty {{fold: accuracy}} object")
        return folds

    def finetune(self, ds: str, mode: str, key: str = "accuracy") -> dict:
        """Accuracy summary over the folds of finetune/{ds}/{mode}/fold{k}.json. key: `accuracy` (strict
        protocol: the last epoch) or `accuracy_best_epoch` (paper protocol: the epoch best on the test fold)."""
        values = []
        for k in self.expected_folds(ds):
            rel = f"finetune/{ds}/{mode}/fold{k}.json"
            values.append(self.value(rel, key))
            fold = self._cache[self.root / rel].get("fold")
            if fold is not None and str(fold) != str(k):
                raise MetricsError(f"{self.root / rel}: file says fold {fold!r}, its name says fold {k}")
        return fold_summary(values)

    def zeroshot(self, ds: str, model: str) -> dict:
        """Accuracy summary over the folds listed in zeroshot/{ds}/{model}.json."""
        rel = f"zeroshot/{ds}/{model}.json"
        folds = self._zeroshot_folds(rel)
        values = []
        for k in self.expected_folds(ds):
            if str(k) not in folds:
                raise MissingMetricsError(f"{self.root / rel}: no accuracy for fold {k}")
            values.append(_fraction(folds[str(k)], f"{self.root / rel} [folds.{k}]"))
        return fold_summary(values)


def _fraction(value: Any, where: str) -> float:
    # A percentage or a NaN slipping in here would print as a plausible but wrong table cell.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise MetricsError(f"{where}: expected a fraction in [0, 1], got {value!r}")
    return float(value)


# -----------------------------------------------------------------------------
# cells: fractions in, percentages out


def _pct(x: float | None) -> float:
    return float("nan") if x is None or math.isnan(x) else round(100.0 * x, 2)


NO_CELL = {"measured": float("nan"), "std": float("nan"), "ci95": float("nan"), "n_folds": pd.NA}
PAPER_PROTOCOL = "paper_protocol"  # column prefix: the released trainer's checkpoint choice on the test fold


def _protocols(m: "MetricFiles", ds: str, mode: str) -> tuple[dict, dict]:
    """(strict, paper-protocol) fold summaries of a fine-tuning result."""
    return _folds(m.finetune(ds, mode)), _folds(m.finetune(ds, mode, "accuracy_best_epoch"))


def _paper_protocol_columns(prefix: str, cell: dict) -> dict:
    return {f"{prefix}{PAPER_PROTOCOL}": cell["measured"], f"{prefix}{PAPER_PROTOCOL}_std": cell["std"],
            f"{prefix}{PAPER_PROTOCOL}_ci95": cell["ci95"]}


def _single(x: float) -> dict:
    """A measurement without folds (AudioSet, ImageNet, querying): no spread, no fold count."""
    return {"measured": _pct(x), "std": float("nan"), "ci95": float("nan"), "n_folds": pd.NA}


def _folds(summary: dict) -> dict:
    return {
        "measured": _pct(summary["mean"]),
        "std": _pct(summary["std"]),
        "ci95": _pct(summary["ci95"]),
        "n_folds": summary["n"],
    }


def _paper(x: Any) -> float:
    return float("nan") if x is None else float(x)


# -----------------------------------------------------------------------------
# the four tables


def _table1(paper: dict, m: MetricFiles) -> list[dict]:
    rows = []
    for r in paper["rows"]:
        ds = DATASET_KEY[r["dataset"]]
        if ds == "audioset":
            cell = _single(m.value("audioset/standalone.json", "map_audio"))
        else:
            cell = _folds(m.finetune(ds, "standalone"))
        rows.append({
            "dataset": r["dataset"], "metric": r["metric"],
            "paper_5_epochs": _paper(r["esresnext_5_epochs"]), "paper_30_epochs": _paper(r["esresnext_30_epochs"]),
            "measured": cell["measured"], "measured_std": cell["std"], "n_folds": cell["n_folds"],
        })
    return rows


def _table2(paper: dict, m: MetricFiles) -> list[dict]:
    rows = []
    for r in paper["rows"]:
        ds = DATASET_KEY[r["dataset"]]
        row = {k: r[k] for k in ("dataset", "modality", "metric", "training_on_target")}
        for model in MODELS:
            chosen = NO_CELL
            if ds == "imagenet":
                cell = _single(m.value(f"imagenet/{model}.json", "accuracy"))
            elif ds == "audioset":
                cell = _single(m.value(f"audioset/{model}.json", f"map_{r['modality']}"))
            elif r["training_on_target"]:
                cell, chosen = _protocols(m, ds, model)
            else:
                cell = _folds(m.zeroshot(ds, model))
            row |= {
                f"{model}_measured": cell["measured"], f"{model}_std": cell["std"], f"{model}_ci95": cell["ci95"],
                f"{model}_n_folds": cell["n_folds"], f"{model}_paper": _paper(r[model]),
                **_paper_protocol_columns(f"{model}_", chosen),
            }
        rows.append(row)
    return rows


def _our_source(row: dict) -> tuple[str, str]:
    """Which metric files an `ours` row of Table 3 comes from: (kind, mode)."""
    name = row["model"]
    if name.startswith("Audio-Head"):
        return "finetune", "standalone"
    for model in MODELS:
        if f"({model} training)" in name:
            return ("finetune" if row["training_on_target"] else "zeroshot"), model
    raise MetricsError(f"table3: no metric source known for our row {name!r}")


def _table3(paper: dict, m: MetricFiles) -> list[dict]:
    rows = []
    for r in paper["rows"]:
        row = {k: r[k] for k in ("model", "source", "training_on_target")}
        for ds in ("us8k", "esc50"):
            cell, chosen = NO_CELL, NO_CELL
            if r.get("ours"):  # baselines are reference values only; the pipeline does not run them
                kind, mode = _our_source(r)
                cell, chosen = _protocols(m, ds, mode) if kind == "finetune" else (_folds(m.zeroshot(ds, mode)), NO_CELL)
            row |= {
                f"{ds}_paper": _paper(r[ds]), f"{ds}_measured": cell["measured"], f"{ds}_std": cell["std"],
                f"{ds}_ci95": cell["ci95"], f"{ds}_n_folds": cell["n_folds"],
                **_paper_protocol_columns(f"{ds}_", chosen),
            }
        row["status"] = r["status"]
        rows.append(row)
    return rows


def _table4(paper: dict, m: MetricFiles) -> list[dict]:
    rows = []
    for r in paper["rows"]:
        key = f"{DATASET_KEY[r['dataset']]}/{r['query']}->{r['result']}"
        row = {k: r[k] for k in ("dataset", "query", "result")}
        for model in MODELS:
            rel = f"querying/{model}.json"
            scores = m.read(rel).get(key)
            if not isinstance(scores, dict):
                raise MissingMetricsError(f"{m.root / rel}: no querying scores for {key!r}")
            for metric in RETRIEVAL:
                if metric not in scores:
                    raise MissingMetricsError(f"{m.root / rel}: no {metric!r} for {key!r}")
                value = _fraction(scores[metric], f"{m.root / rel} [{key}.{metric}]")
                row[f"{model}_{metric}_measured"] = _pct(value)
                row[f"{model}_{metric}_paper"] = _paper(r[f"{model}_{metric}"])
        rows.append(row)
    return rows


_BUILDERS = {"table1": _table1, "table2": _table2, "table3": _table3, "table4": _table4}


def load_paper(paper_yaml: str | Path = PAPER_YAML) -> dict:
    with open(paper_yaml, encoding="utf-8") as f:
        paper = yaml.safe_load(f)
    missing = [t for t in TABLES if t not in paper]
    if missing:
        raise MetricsError(f"{paper_yaml}: no {', '.join(missing)}")
    return paper


def build_table(
    name: str,
    metrics_root: str | Path,
    profile: str,
    paper_yaml: str | Path = PAPER_YAML,
    *,
    folds: Mapping[str, Iterable[int]] | None = None,
    _files: MetricFiles | None = None,
) -> pd.DataFrame:
    """One table as a DataFrame (caption in df.attrs['caption']); needs only that table's metric files."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown table {name!r}; expected one of {TABLES}")
    paper = load_paper(paper_yaml)[name]
    files = _files or MetricFiles(metrics_root, profile, folds)
    df = pd.DataFrame(_BUILDERS[name](paper, files))
    for col in [c for c in df.columns if c.endswith("n_folds")]:
        df[col] = df[col].astype("Int64")  # integer counts, empty (<NA>) where a value has no folds
    df["profile"] = profile
    df.attrs["caption"] = paper["caption"]
    _check_measured(name, df)
    return df


def build_tables(
    metrics_root: str | Path,
    profile: str,
    paper_yaml: str | Path = PAPER_YAML,
    *,
    folds: Mapping[str, Iterable[int]] | None = None,
    only: Iterable[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """The tables ('table1'..'table4', or those in `only`, in paper order), from work/<profile>/metrics."""
    wanted = set(TABLES if only is None else only)
    if wanted - set(TABLES):
        raise ValueError(f"unknown tables {sorted(wanted - set(TABLES))}; expected some of {TABLES}")
    files = MetricFiles(metrics_root, profile, folds)  # shared: each file is read and checked once
    return {
        name: build_table(name, metrics_root, profile, paper_yaml, _files=files) for name in TABLES if name in wanted
    }


def write_tables(tables: Mapping[str, pd.DataFrame], out_dir: str | Path) -> dict[str, Path]:
    """<out_dir>/<name>.csv for every table, each written atomically. Returns the paths."""
    paths = {}
    for name, df in tables.items():
        path = Path(out_dir) / f"{name}.csv"
        with atomic_path(path, suffix=".csv") as tmp:
            df.to_csv(tmp, index=False)
        paths[name] = path
    return paths


# -----------------------------------------------------------------------------
# measured cells: the flat view shared by results/metrics.json and MLflow


@dataclass(frozen=True)
class Cell:
    table: str
    row: tuple[str, ...]  # what identifies the row, e.g. ("AudioCLIP (full training)", "zero-shot")
    label: str  # which value of the row, e.g. "us8k" or "partial/p1"; "" where a row has one value
    column: str  # the DataFrame column holding it
    dataset: str  # paper dataset name
    value: float  # percent
    paper: float  # percent, NaN where the paper has none
    std: float
    ci95: float
    n_folds: int | None

    @property
    def key(self) -> str:
        return "/".join([self.table, *self.row] + ([self.label] if self.label else []))


def _target(flag: Any) -> str:
    # bool in a built table; a table read back from CSV may hold the strings "True"/"False"
    if isinstance(flag, str):
        flag = flag.strip().lower() == "true"
    return "on-target" if flag else "zero-shot"


def measured_cells(name: str, df: pd.DataFrame) -> list[Cell]:
    """Every measured cell of our rows, in table order. Works on built tables and on their CSVs read back."""
    cells = []

    def add(row, ident, label, prefix, dataset, paper_col, std_col=None, ci_col=None, n_col=None):
        n = row[n_col] if n_col else pd.NA
        cells.append(Cell(
            table=name, row=ident, label=label, column=f"{prefix}measured",
            dataset=dataset, value=float(row[f"{prefix}measured"]), paper=float(row[paper_col]),
            std=float(row[std_col]) if std_col else float("nan"),
            ci95=float(row[ci_col]) if ci_col else float("nan"),
            n_folds=None if pd.isna(n) else int(n),
        ))
        chosen = f"{prefix}{PAPER_PROTOCOL}"
        if chosen in row and not pd.isna(row[chosen]):  # fine-tuned cells: the paper protocol's number too
            cells.append(Cell(
                table=name, row=ident, label=f"{label}/paper protocol" if label else "paper protocol",
                column=chosen, dataset=dataset, value=float(row[chosen]), paper=float(row[paper_col]),
                std=float(row[f"{chosen}_std"]), ci95=float(row[f"{chosen}_ci95"]),
                n_folds=None if pd.isna(n) else int(n),
            ))

    for _, row in df.iterrows():
        if name == "table1":
            add(row, (row["dataset"], row["metric"]), "", "", row["dataset"], "paper_30_epochs",
                "measured_std", None, "n_folds")
        elif name == "table2":
            ident = (row["dataset"], row["modality"], row["metric"], _target(row["training_on_target"]))
            for model in MODELS:
                p = f"{model}_"
                add(row, ident, model, p, row["dataset"], f"{p}paper", f"{p}std", f"{p}ci95", f"{p}n_folds")
        elif name == "table3":
            if row["source"] != "ours":  # baselines ("" or NaN once read back from CSV)
                continue
            for ds in ("us8k", "esc50"):
                p = f"{ds}_"
                add(row, (row["model"], _target(row["training_on_target"])), ds, p, DATASET_NAME[ds],
                    f"{p}paper", f"{p}std", f"{p}ci95", f"{p}n_folds")
        elif name == "table4":
            for model in MODELS:
                for metric in RETRIEVAL:
                    p = f"{model}_{metric}_"
                    add(row, (row["dataset"], f"{row['query']}->{row['result']}"), f"{model}/{metric}", p,
                        row["dataset"], f"{p}paper")
        else:
            raise ValueError(f"unknown table {name!r}")
    return cells


def _check_measured(name: str, df: pd.DataFrame) -> None:
    # Belt and braces behind the per-file errors: no cell of our rows may be empty.
    empty = [c.key for c in measured_cells(name, df) if math.isnan(c.value)]
    if empty:
        raise MetricsError(f"{name}: empty measured cells for our rows: {', '.join(empty)}")


def metrics_summary(tables: Mapping[str, pd.DataFrame]) -> dict:
    """Flat {"table3/AudioCLIP (full training)/zero-shot/us8k": 68.78, ..., "profile": p} for results/metrics.json.

    Values are the tables' percentages (measured means) of our rows only.
    """
    profiles = {p for df in tables.values() for p in df["profile"].unique()}
    if len(profiles) != 1:
        raise ProfileMismatchError(f"tables of several profiles cannot share one summary: {sorted(profiles)}")
    summary: dict[str, Any] = {"profile": profiles.pop()}
    for name, df in tables.items():
        for cell in measured_cells(name, df):
            if cell.key in summary:
                raise MetricsError(f"two cells share the summary key {cell.key!r}")
            summary[cell.key] = cell.value
    return summary
