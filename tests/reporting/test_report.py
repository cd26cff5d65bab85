"""write_report on fabricated metric files, tables and tiny checkpoints: sections, figures, warnings, errors."""

from __future__ import annotations

import base64
import functools
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from fake_metrics import FOLDS, fabricate

from pipeline.io import read_json, write_json
from pipeline.models import create_model
from pipeline.reporting.report import SECTIONS, write_report
from pipeline.reporting.tables import ProfileMismatchError, build_tables, write_tables
from pipeline.training.model_io import save_model

N_CLASSES = {"esc50": 50, "us8k": 10}
EPOCHS = 4
PNG = "data:image/png;base64,"
# 2 per-fold bar charts + AudioSet stages + fine-tuning curves + 2 confusion matrices + 1 precision-recall figure
ALL_FIGURES = 7


def enrich(root: Path) -> None:
    """Add what the real jobs write and fabricate() leaves out: history, class names, confusion, pr_curve."""
    for ds, folds in FOLDS.items():
        names = [f"{ds} class {i}" for i in range(N_CLASSES[ds])]
        for mode in ("standalone", "partial", "full"):
            for k in folds:
                path = root / f"finetune/{ds}/{mode}/fold{k}.json"
                data = read_json(path)
                acc = data["metrics"]["accuracy"]
                data["history"] = [{"epoch": e, "lr": 1e-3, "loss": 3.0 / e + 0.1 * k,
                                    "accuracy": acc * e / EPOCHS} for e in range(1, EPOCHS + 1)]
                data["class_names"] = names
                n = len(names)  # 4 clips per class: 3 right, 1 taken for the next class
                data["confusion"] = [[3 if p == t else (1 if p == (t + 1) % n else 0) for p in range(n)]
                                     for t in range(n)]
                write_json(path, data)
    for model in ("partial", "full"):
        path = root / f"querying/{model}.json"
        data = read_json(path)
        for scores in data["metrics"].values():
            scores["pr_curve"] = [round(1.0 - 0.08 * i, 3) for i in range(11)]
        write_json(path, data)


@functools.cache
def tiny_model():
    return create_model("esresnext-fbsp-tiny")  # ~1 s to build: once per session


def make_run(tmp_path: Path, profile: str = "embedded", extras: bool = True) -> dict:
    root = fabricate(tmp_path / "work" / profile / "metrics", profile)
    if extras:
        enrich(root)
    results = tmp_path / "results"
    write_tables(build_tables(root, profile), results)
    checkpoints = {}
    for stage, name in (("standalone", "stage1.pt"), ("partial", "stage2_partial.pt")):
        path = tmp_path / "checkpoints" / name
        history = [{"epoch": e, "lr": 1e-3, "loss": 5.0 / e} for e in range(1, 4)]
        save_model(path, tiny_model(), "esresnext-fbsp-tiny", {}, {"profile": profile, "stage": stage,
                                                                    "history": history})
        checkpoints[stage] = path
    return {"results_dir": results, "metrics_root": root, "checkpoints": checkpoints, "profile": profile}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One complete run and its report, for the tests that only read them."""
    base = tmp_path_factory.mktemp("report")
    run = make_run(base)
    out = base / "results" / "report.html"
    write_report(out=out, now=datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc), **run)
    return run, out, out.read_text(encoding="utf-8")


@pytest.fixture
def run(shared, tmp_path):
    """A private copy of the shared run, free to break."""
    src = shared[0]["results_dir"].parent
    shutil.copytree(src, tmp_path, dirs_exist_ok=True)
    moved = lambda p: tmp_path / Path(p).relative_to(src)  # noqa: E731
    return {**shared[0], "results_dir": moved(shared[0]["results_dir"]),
            "metrics_root": moved(shared[0]["metrics_root"]),
            "checkpoints": {k: moved(v) for k, v in shared[0]["checkpoints"].items()}}


def report(run: dict, out: Path) -> str:
    assert write_report(out=out, **run) == out
    return out.read_text(encoding="utf-8")


def test_report_is_one_html_document_with_every_section_and_figure(shared):
    run, out, text = shared
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert text.count("<html") == 1 and text.count("<body") == 1 and text.count("</html>") == 1
    assert "<script" not in text and 'src="http' not in text and "href=" not in text  # self-contained
    positions = [text.index(f"<h2>{title}</h2>") for title in SECTIONS]
    assert positions == sorted(positions)  # in the order of the brief
    assert text.count(PNG) == ALL_FIGURES
    assert [p.name for p in out.parent.iterdir() if "report" in p.name] == ["report.html"]  # no temporary left
    assert "Warning." in text and "NOT the paper&#x27;s numbers" in text
    assert text.index("Warning.") < text.index(f"<h2>{SECTIONS[0]}</h2>")  # on top of the page


def test_figures_are_valid_pngs(shared):
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', shared[2])
    assert len(images) == ALL_FIGURES
    for data in images:
        png = base64.b64decode(data, validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_table_values_appear_as_in_the_csv(shared):
    run, _, text = shared
    t3 = pd.read_csv(run["results_dir"] / "table3.csv")
    full = t3[(t3["model"] == "AudioCLIP (full training)") & (t3["training_on_target"] == True)].iloc[0]  # noqa: E712
    for col in ("esc50_measured", "esc50_paper_protocol", "esc50_ci95", "us8k_paper"):
        assert f"<td>{full[col]:.2f}</td>" in text, col
    assert "<td>95.50</td>" in text  # ESC-50 fine-tuned full, strict: (95 + 96) / 2, by hand
    assert "<td>97.50</td>" in text  # its paper protocol (best epoch): (97 + 98) / 2
    assert "<th>paper protocol</th>" in text and "<th>ci95</th>" in text
    t4 = pd.read_csv(run["results_dir"] / "table4.csv")
    assert f"<td>{t4.loc[0, 'full_map_measured']:.2f}</td>" in text


def test_provenance_footer(shared):
    run, _, text = shared
    footer = text.split("<footer>")[1]
    assert "Profile: <b>embedded</b>" in footer and "table1: embedded, table2: embedded" in footer
    assert "Generated 2030-01-02T03:04:05+00:00" in footer
    for path in (run["results_dir"] / "table4.csv", run["metrics_root"] / "querying" / "full.json",
                 run["metrics_root"] / "finetune/us8k/standalone/fold3.json", run["checkpoints"]["partial"]):
        assert f"<li>{path}</li>" in footer, path
    assert "0 optional input files missing" in footer


def test_paper_profile_has_no_smoke_warning(tmp_path):
    run = make_run(tmp_path, "paper", extras=False)  # metric files as fabricated: no curves, no confusion
    text = report(run, tmp_path / "report.html")
    assert "Warning." not in text and "NOT the paper" not in text
    assert "Profile: <b>paper</b>" in text and "table3: paper" in text
    assert text.count(PNG) == 3  # the two per-fold charts and the AudioSet stages; the rest is a note
    assert "no fine-tuning history to draw" in text and "no confusion matrix for esc50 (full)" in text


def test_missing_optional_inputs_are_named_not_fatal(run, tmp_path):
    querying = run["metrics_root"] / "querying" / "full.json"
    querying.unlink()
    (run["metrics_root"] / "querying" / "partial.json").unlink()
    run["checkpoints"]["full"] = tmp_path / "checkpoints" / "stage3_full.pt"  # never written
    fold2 = run["metrics_root"] / "finetune/us8k/full/fold2.json"
    data = read_json(fold2)
    del data["confusion"], data["history"]
    write_json(fold2, data)
    (run["metrics_root"] / "finetune/esc50/partial/fold2.json").unlink()

    text = report(run, tmp_path / "report.html")
    assert f"missing querying file {querying}" in text
    assert f"full: missing checkpoint {run['checkpoints']['full']}" in text
    assert "finetune/us8k/full: fold 2 has no confusion matrix" in text
    assert "no per-epoch history in finetune/us8k/full/fold2" in text
    assert f"missing in {run['metrics_root'] / 'finetune/esc50/partial'}: fold2.json" in text
    assert "no precision-recall curves to draw" in text
    # every other figure is still drawn: the confusion of folds 1 and 3, the curves of the other folds
    assert text.count(PNG) == ALL_FIGURES - 1
    assert "4 optional input files missing" in text  # 2 querying files, a fold, a checkpoint


def test_missing_table_csv_raises_naming_it(run, tmp_path):
    csv = run["results_dir"] / "table2.csv"
    csv.unlink()
    out = tmp_path / "report.html"
    with pytest.raises(FileNotFoundError, match=re.escape(str(csv))):
        write_report(out=out, **run)
    assert not out.exists()


def test_foreign_profile_is_refused(run, tmp_path):
    path = run["metrics_root"] / "finetune/esc50/full/fold1.json"
    write_json(path, {**read_json(path), "profile": "paper"})
    with pytest.raises(ProfileMismatchError, match=re.escape(str(path))):
        write_report(out=tmp_path / "report.html", **run)
    with pytest.raises(ProfileMismatchError, match="table1.csv"):
        write_report(out=tmp_path / "report.html", **{**run, "profile": "paper"})
