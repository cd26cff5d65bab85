"""Parse and validate the official metadata files into one common table per dataset.

read(dataset, root) -> Metadata, whose `items` DataFrame has one row per clip (or image) with the columns
    source (file name), path (absolute), fold (int, 0 where a set has none), split ('' unless AudioSet),
    label (class index, -1 for multi-label sets), labels (tuple of class indices)
plus the dataset's own columns (ESC-50 `target`, US8K `fsID`, AudioSet `ytid`/`frames_dir`, ...).
Class indices are contiguous 0..K-1 in the order of the sorted original ids (ESC-50 `target`, US8K `classID`,
ImageNet wnid) or of class_labels_indices.csv (AudioSet); class names have '_' replaced by ' '.

Every problem raises MetadataError naming the file, the row (1-based line number in the file, header = 1) and
the column: missing columns, bad numbers, folds outside range, unknown labels, duplicate rows, a class id with
two names.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ESC50_COLUMNS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
US8K_COLUMNS = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
AUDIOSET_LABEL_COLUMNS = ["index", "mid", "display_name"]
FOLDS = {"esc50": 5, "us8k": 10}
CLASSES = {"esc50": 50, "us8k": 10}  # original class ids are 0..K-1: any other is an unknown label
# split -> the official segment lists it is read from (the paper trains on balanced + unbalanced; the default
# here is the balanced list only, params.yaml data.audioset.train_segments says which).
AUDIOSET_SEGMENT_FILES = {"train": ("balanced_train_segments.csv",), "eval": ("eval_segments.csv",)}
YTID_RE = re.compile(r"^[A-Za-z0-9_-]{11}$")
WNID_RE = re.compile(r"^n\d{8}$")
IMAGE_EXTENSIONS = {".jpeg", ".jpg", ".png"}


class MetadataError(ValueError):
    """A metadata file is malformed; the message names file, row and column."""


@dataclass(frozen=True)
class Metadata:
    dataset: str
    root: Path
    class_names: list[str]
    items: pd.DataFrame
    multilabel: bool = False


def class_name(raw: str) -> str:
    return raw.strip().replace("_", " ")


def read(dataset: str, root: str | Path, train_segments: tuple[str, ...] | None = None) -> Metadata:
    """`train_segments`: AudioSet only, the segment lists of its train split (default: the balanced one)."""
    readers = {"esc50": read_esc50, "us8k": read_us8k, "audioset": read_audioset, "imagenet": read_imagenet}
    if dataset not in readers:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(readers)}")
    if dataset == "audioset":
        return read_audioset(root, train_segments)
    return readers[dataset](root)


# -----------------------------------------------------------------------------
# shared checks; a table row r (0-based) is line r + 2 of its file

def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise MetadataError(f"{path}: metadata file not found")
    # everything as text, blanks kept as '': conversions below report the exact bad cell
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MetadataError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    if df.empty:
        raise MetadataError(f"{path}: no rows")
    return df


def _error(path: Path, row: int, column: str, problem: str) -> MetadataError:
    return MetadataError(f"{path}: row {row + 2}, column '{column}': {problem}")


def _ints(df: pd.DataFrame, column: str, path: Path, lo: int | None = None, hi: int | None = None) -> pd.Series:
    out = []
    for r, v in enumerate(df[column]):
        try:
            x = int(v)
        except ValueError:
            raise _error(path, r, column, f"{v!r} is not an integer") from None
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            raise _error(path, r, column, f"{x} outside the range {lo}..{hi}")
        out.append(x)
    return pd.Series(out, index=df.index, dtype="int64")


def _optional_floats(df: pd.DataFrame, column: str, path: Path) -> pd.Series:
    out = []
    for r, v in enumerate(df[column]):
        try:
            out.append(float(v) if v.strip() else float("nan"))  # blank is allowed (some distributions drop it)
        except ValueError:
            raise _error(path, r, column, f"{v!r} is not a number") from None
    return pd.Series(out, index=df.index, dtype="float64")


def _nonempty(df: pd.DataFrame, column: str, path: Path) -> None:
    for r, v in enumerate(df[column]):
        if not v.strip():
            raise _error(path, r, column, "empty")


def _unique(df: pd.DataFrame, column: str, path: Path) -> None:
    seen: dict[str, int] = {}
    for r, v in enumerate(df[column]):
        if v in seen:
            raise _error(path, r, column, f"duplicate {v!r} (first at row {seen[v] + 2})")
        seen[v] = r


def _class_table(ids: pd.Series, names: pd.Series, path: Path, id_col: str, name_col: str) -> dict[int, str]:
    """Original class id -> raw name, refusing an id with two names or a name with two ids."""
    by_id: dict[int, tuple[str, int]] = {}
    by_name: dict[str, int] = {}
    for r, (i, n) in enumerate(zip(ids, names)):
        if i in by_id and by_id[i][0] != n:
            raise _error(path, r, name_col, f"{id_col} {i} is {n!r} here but {by_id[i][0]!r} at row {by_id[i][1] + 2}")
        if n in by_name and by_name[n] != i:
            raise _error(path, r, id_col, f"{name_col} {n!r} has {id_col} {i} here but {by_name[n]} elsewhere")
        by_id.setdefault(i, (n, r))
        by_name.setdefault(n, i)
    return {i: by_id[i][0] for i in sorted(by_id)}


def _single_label_items(df: pd.DataFrame, ids: pd.Series, classes: dict[int, str]) -> pd.DataFrame:
    index = {orig: k for k, orig in enumerate(classes)}  # sorted original ids -> 0..K-1
    df["label"] = [index[i] for i in ids]
    df["labels"] = [(k,) for k in df["label"]]
    df["split"] = ""
    return df


# -----------------------------------------------------------------------------
# ESC-50: meta/esc50.csv, audio/<filename>

def read_esc50(root: str | Path) -> Metadata:
    root = Path(root)
    path = root / "meta" / "esc50.csv"
    df = _read_csv(path, ESC50_COLUMNS)
    for c in ("filename", "category", "src_file", "take"):
        _nonempty(df, c, path)
    _unique(df, "filename", path)
    df["fold"] = _ints(df, "fold", path, 1, FOLDS["esc50"])
    df["target"] = _ints(df, "target", path, 0, CLASSES["esc50"] - 1)
    for r, v in enumerate(df["esc10"]):
        if v not in ("True", "False"):
            raise _error(path, r, "esc10", f"{v!r} is not True/False")
    df["esc10"] = df["esc10"] == "True"
    classes = _class_table(df["target"], df["category"], path, "target", "category")
    df = _single_label_items(df, df["target"], classes)
    df["source"] = df["filename"]
    df["path"] = [str(root / "audio" / f) for f in df["filename"]]
    return Metadata("esc50", root, [class_name(n) for n in classes.values()], df.reset_index(drop=True))


# -----------------------------------------------------------------------------
# UrbanSound8K: metadata/UrbanSound8K.csv, audio/fold<k>/<slice_file_name>

def read_us8k(root: str | Path) -> Metadata:
    root = Path(root)
    path = root / "metadata" / "UrbanSound8K.csv"
    df = _read_csv(path, US8K_COLUMNS)
    for c in ("slice_file_name", "class"):
        _nonempty(df, c, path)
    _unique(df, "slice_file_name", path)
    df["fold"] = _ints(df, "fold", path, 1, FOLDS["us8k"])
    df["classID"] = _ints(df, "classID", path, 0, CLASSES["us8k"] - 1)
    df["fsID"] = _ints(df, "fsID", path, 0)
    for c in ("start", "end", "salience"):
        df[c] = _optional_floats(df, c, path)
    df["class"] = df["class"].str.strip()
    classes = _class_table(df["classID"], df["class"], path, "classID", "class")
    df = _single_label_items(df, df["classID"], classes)
    df["source"] = df["slice_file_name"]
    df["path"] = [str(root / "audio" / f"fold{k}" / f) for k, f in zip(df["fold"], df["slice_file_name"])]
    return Metadata("us8k", root, [class_name(n) for n in classes.values()], df.reset_index(drop=True))


# -----------------------------------------------------------------------------
# AudioSet: class_labels_indices.csv, {balanced_train,eval}_segments.csv, audio/, frames/

def read_audioset_labels(path: str | Path) -> pd.DataFrame:
    """class_labels_indices.csv -> DataFrame(index, mid, display_name); index must be 0..K-1 in file order."""
    path = Path(path)
    df = _read_csv(path, AUDIOSET_LABEL_COLUMNS)
    df["index"] = _ints(df, "index", path, 0)
    for r, v in enumerate(df["index"]):
        if v != r:
            raise _error(path, r, "index", f"expected {r} (indices must be 0..K-1 in order), got {v}")
    for c in ("mid", "display_name"):
        _nonempty(df, c, path)
    _unique(df, "mid", path)
    return df[AUDIOSET_LABEL_COLUMNS].reset_index(drop=True)


def read_audioset_segments(path: str | Path, mids: dict[str, int]) -> pd.DataFrame:
    """A segment list -> DataFrame(ytid, start_seconds, end_seconds, mids, labels, row).

    Format: '#' comment lines, then `YTID, start_seconds, end_seconds, "mid1,mid2,..."`. Here `row` and the
    error messages count every line of the file (comments included), 1-based.
    """
    path = Path(path)
    if not path.is_file():
        raise MetadataError(f"{path}: metadata file not found")
    rows, seen = [], {}
    with open(path, newline="", encoding="utf-8") as f:
        for line_no, fields in enumerate(csv.reader(f, skipinitialspace=True), start=1):
            if not fields or fields[0].startswith("#"):
                continue

            def bad(column: str, problem: str) -> MetadataError:
                return MetadataError(f"{path}: row {line_no}, column '{column}': {problem}")

            if len(fields) != 4:
                raise bad("YTID", f"expected 4 fields (YTID, start_seconds, end_seconds, positive_labels), "
                                  f"got {len(fields)}")
            ytid, start, end, positive = (x.strip() for x in fields)
            if not YTID_RE.match(ytid):
                raise bad("YTID", f"{ytid!r} is not an 11-character YouTube id")
            try:
                start_s, end_s = float(start), float(end)
            except ValueError:
                raise bad("start_seconds", f"{start!r}/{end!r} are not numbers") from None
            if not 0 <= start_s < end_s:
                raise bad("end_seconds", f"segment {start_s}..{end_s} is empty or negative")
            labels = [m.strip() for m in positive.split(",") if m.strip()]
            if not labels:
                raise bad("positive_labels", "no labels")
            unknown = [m for m in labels if m not in mids]
            if unknown:
                raise bad("positive_labels", f"unknown label(s) {unknown} (not in class_labels_indices.csv)")
            key = (ytid, round(start_s * 1000))
            if key in seen:
                raise bad("YTID", f"duplicate segment {ytid} at {start_s} s (first at row {seen[key]})")
            seen[key] = line_no
            rows.append({"ytid": ytid, "start_seconds": start_s, "end_seconds": end_s, "mids": tuple(labels),
                         "labels": tuple(sorted({mids[m] for m in labels})), "row": line_no})
    if not rows:
        raise MetadataError(f"{path}: no segments")
    return pd.DataFrame(rows)


def segment_files(train_segments: tuple[str, ...] | None = None) -> dict[str, tuple[str, ...]]:
    """split -> segment list file names, with the train split's lists chosen by `train_segments`."""
    return {**AUDIOSET_SEGMENT_FILES, **({"train": tuple(train_segments)} if train_segments else {})}


def read_audioset_split(root: Path, files: tuple[str, ...], mids: dict[str, int]) -> pd.DataFrame:
    """The segments of one split, from one or more lists (balanced + unbalanced train), in file order."""
    parts = [read_audioset_segments(root / name, mids).assign(list=name) for name in files]
    df = pd.concat(parts, ignore_index=True)
    dup = df.duplicated(["ytid", "start_seconds"])
    if dup.any():
        row = df[dup].iloc[0]
        raise MetadataError(f"{root / row['list']}: row {row['row']}, column 'YTID': segment {row['ytid']} at "
                            f"{row['start_seconds']} s is also in another list of the same split")
    return df


def read_audioset(root: str | Path, train_segments: tuple[str, ...] | None = None) -> Metadata:
    root = Path(root)
    labels = read_audioset_labels(root / "class_labels_indices.csv")
    mids = {m: i for i, m in zip(labels["index"], labels["mid"])}
    files = segment_files(train_segments)
    parts = []
    for split, names in files.items():
        parts.append(read_audioset_split(root, names, mids).assign(split=split))
    df = pd.concat(parts, ignore_index=True)
    # the same video in both splits would leak eval material into training
    train_ids = set(parts[0]["ytid"])
    leaked = sorted(set(parts[1]["ytid"]) & train_ids)
    if leaked:
        raise MetadataError(f"{root / files['eval'][0]}: column 'YTID': {len(leaked)} video(s) also in "
                            f"{', '.join(files['train'])}, e.g. {leaked[:3]}")
    stems = [f"{y}_{int(round(s * 1000))}" for y, s in zip(df["ytid"], df["start_seconds"])]
    df["source"] = [f"{s}.wav" for s in stems]
    df["path"] = [str(root / "audio" / f"{s}.wav") for s in stems]
    df["frames_dir"] = [str(root / "frames" / s) for s in stems]
    df["fold"] = 0
    df["label"] = -1
    return Metadata("audioset", root, list(labels["display_name"]), df, multilabel=True)


# -----------------------------------------------------------------------------
# ImageNet-like: LOC_synset_mapping.txt ("wnid name1, name2"), val/<wnid>/<image>

def read_synset_mapping(path: str | Path) -> pd.DataFrame:
    """-> DataFrame(wnid, names (tuple), row), in file order."""
    path = Path(path)
    if not path.is_file():
        raise MetadataError(f"{path}: metadata file not found")
    rows, seen = [], {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        wnid, _, names = line.strip().partition(" ")
        if not WNID_RE.match(wnid):
            raise MetadataError(f"{path}: row {line_no}, column 'wnid': {wnid!r} is not n + 8 digits")
        if wnid in seen:
            raise MetadataError(f"{path}: row {line_no}, column 'wnid': duplicate {wnid} (first at row {seen[wnid]})")
        names_t = tuple(n.strip() for n in names.split(",") if n.strip())
        if not names_t:
            raise MetadataError(f"{path}: row {line_no}, column 'names': no class name for {wnid}")
        seen[wnid] = line_no
        rows.append({"wnid": wnid, "names": names_t, "row": line_no})
    if not rows:
        raise MetadataError(f"{path}: no synsets")
    return pd.DataFrame(rows)


def read_imagenet(root: str | Path, split: str = "val") -> Metadata:
    root = Path(root)
    mapping = read_synset_mapping(root / "LOC_synset_mapping.txt").sort_values("wnid", ignore_index=True)
    index = {w: k for k, w in enumerate(mapping["wnid"])}
    folder = root / split
    if not folder.is_dir():
        raise MetadataError(f"{folder}: image folder not found")
    rows = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name not in index:
            raise MetadataError(f"{sub}: unknown label {sub.name!r} (not in LOC_synset_mapping.txt)")
        for img in sorted(sub.iterdir()):
            if img.suffix.lower() in IMAGE_EXTENSIONS:
                rows.append({"source": img.name, "path": str(img), "wnid": sub.name, "label": index[sub.name]})
    if not rows:
        raise MetadataError(f"{folder}: no images")
    df = pd.DataFrame(rows)
    df["labels"] = [(k,) for k in df["label"]]
    df["fold"], df["split"] = 0, ""
    names = [class_name(n[0]) for n in mapping["names"]]
    return Metadata("imagenet", root, names, df)
