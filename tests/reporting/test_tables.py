"""build_tables on fabricated metric files: values, row order, errors for missing files and foreign profiles."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from fake_metrics import (
    AUDIOSET,
    FINETUNE_BASE,
    FOLDS,
    QUERY_KEYS,
    ZEROSHOT_BASE,
    fabricate,
    query_scores,
    write_metrics,
)

from pipeline.io import read_json, write_json
from pipeline.reporting.tables import (
    PAPER_YAML,
    MetricsError,
    MissingMetricsError,
    ProfileMismatchError,
    build_table,
    build_tables,
    metrics_summary,
    write_tables,
)

PAPER = yaml.safe_load(PAPER_YAML.read_text())
T975 = {1: 12.7062, 2: 4.3027}  # t quantiles for the fabricated fold counts (3 and 2 folds)


def finetune_pct(ds, mode):
    """mean, std and ci95 in percent of the fabricated folds base + 0.01 k."""
    vals = np.array([FINETUNE_BASE[ds, mode] + 0.01 * k for k in FOLDS[ds]])
    return summary_pct(vals)


def zeroshot_pct(ds, model):
    return summary_pct(np.array([ZEROSHOT_BASE[ds, model] + 0.01 * k for k in FOLDS[ds]]))


def summary_pct(vals):
    n, std = len(vals), vals.std(ddof=1)
    return round(100 * vals.mean(), 2), round(100 * std, 2), round(100 * T975[n - 1] * std / math.sqrt(n), 2), n


@pytest.fixture
def tables(metrics_root):
    return build_tables(metrics_root, "embedded")


def test_fine_tuned_cells_report_both_protocols(tables):
    """strict = the last epoch (`accuracy`); paper protocol = the epoch best on the test fold."""
    t3 = tables["table3"].set_index("model")
    full = t3.loc["AudioCLIP (full training)"]
    on_target = full[full["training_on_target"] == True]  # noqa: E712 - a pandas mask
    row = on_target.iloc[0]
    assert row["esc50_measured"] == pytest.approx(100 * (0.94 + 0.015))  # folds 1, 2 of base + 0.01 k
    assert row["esc50_paper_protocol"] == pytest.approx(100 * (0.96 + 0.015))
    assert row["esc50_paper_protocol_std"] == pytest.approx(row["esc50_std"])
    zero_shot = full[full["training_on_target"] == False].iloc[0]  # noqa: E712
    assert pd.isna(zero_shot["esc50_paper_protocol"])  # no epoch to choose: one protocol only
    t2 = tables["table2"]
    tuned = t2[(t2["dataset"] == "ESC-50") & (t2["training_on_target"] == True)].iloc[0]  # noqa: E712
    assert tuned["full_paper_protocol"] == pytest.approx(row["esc50_paper_protocol"])


def test_rows_columns_and_captions_follow_the_paper(tables):
    assert list(tables) == ["table1", "table2", "table3", "table4"]
    expected_columns = {
        "table1": ["dataset", "metric", "paper_5_epochs", "paper_30_epochs", "measured", "measured_std", "n_folds",
                   "profile"],
        "table2": ["dataset", "modality", "metric", "training_on_target"]
        + [f"{m}_{c}" for m in ("partial", "full") for c in ("measured", "std", "ci95", "n_folds", "paper",
                                                             "paper_protocol", "paper_protocol_std",
                                                             "paper_protocol_ci95")] + ["profile"],
        "table3": ["model", "source", "training_on_target"]
        + [f"{d}_{c}" for d in ("us8k", "esc50") for c in ("paper", "measured", "std", "ci95", "n_folds",
                                                           "paper_protocol", "paper_protocol_std",
                                                           "paper_protocol_ci95")]
        + ["status", "profile"],
        "table4": ["dataset", "query", "result"]
        + [f"{m}_{x}_{c}" for m in ("partial", "full") for x in ("p1", "r1", "map") for c in ("measured", "paper")]
        + ["profile"],
    }
    for name, df in tables.items():
        assert list(df.columns) == expected_columns[name], name
        assert len(df) == len(PAPER[name]["rows"])
        assert df.attrs["caption"] == PAPER[name]["caption"]
        assert (df["profile"] == "embedded").all()
    assert list(tables["table3"]["model"]) == [r["model"] for r in PAPER["table3"]["rows"]]
    assert list(tables["table4"]["dataset"]) == [r["dataset"] for r in PAPER["table4"]["rows"]]


def test_table1_values(tables):
    t1 = tables["table1"].set_index("dataset")
    assert t1.loc["AudioSet", "measured"] == 30.0
    assert pd.isna(t1.loc["AudioSet", "n_folds"]) and math.isnan(t1.loc["AudioSet", "measured_std"])
    assert t1.loc["AudioSet", "paper_5_epochs"] == 28.17 and t1.loc["AudioSet", "paper_30_epochs"] == 34.14
    for name, ds in (("UrbanSound8K", "us8k"), ("ESC-50", "esc50")):
        mean, std, _, n = finetune_pct(ds, "standalone")
        assert (t1.loc[name, "measured"], t1.loc[name, "measured_std"], t1.loc[name, "n_folds"]) == (mean, std, n)
    assert t1.loc["UrbanSound8K", "measured"] == 82.0  # (81 + 82 + 83) / 3, by hand


def test_table2_values(tables):
    t2 = tables["table2"]
    imagenet = t2.iloc[0]
    assert imagenet["partial_measured"] == 40.51 and imagenet["full_measured"] == 21.79
    assert imagenet["partial_paper"] == 40.51 and pd.isna(imagenet["partial_n_folds"])
    for i, modality in zip((1, 2, 3), ("image", "audio", "both")):
        row = t2.iloc[i]
        assert row["modality"] == modality
        for model in ("partial", "full"):
            assert row[f"{model}_measured"] == round(100 * AUDIOSET[model][f"map_{modality}"], 2)
    for i, ds, on_target in ((4, "us8k", False), (5, "us8k", True), (6, "esc50", False), (7, "esc50", True)):
        row = t2.iloc[i]
        assert row["training_on_target"] == on_target
        for model in ("partial", "full"):
            mean, std, _, n = finetune_pct(ds, model) if on_target else zeroshot_pct(ds, model)
            assert (row[f"{model}_measured"], row[f"{model}_std"], row[f"{model}_n_folds"]) == (mean, std, n)
    assert t2.iloc[4]["partial_measured"] == 62.0  # zero-shot US8K partial: (61 + 62 + 63) / 3


def test_table3_baselines_keep_paper_values_only(tables):
    t3 = tables["table3"]
    baselines = t3[t3["source"] != "ours"]
    assert len(baselines) == 11
    for col in ("us8k_measured", "us8k_std", "us8k_ci95", "esc50_measured", "esc50_std", "esc50_ci95"):
        assert baselines[col].isna().all(), col
    assert baselines["us8k_n_folds"].isna().all() and baselines["esc50_n_folds"].isna().all()
    human = t3.iloc[0]
    assert math.isnan(human["us8k_paper"]) and human["esc50_paper"] == 81.3 and human["training_on_target"] is None
    assert t3.iloc[4]["us8k_paper"] == 85.42 and t3.iloc[4]["status"] == "paper-table"


def test_table3_our_rows(tables):
    t3 = tables["table3"]
    ours = t3[t3["source"] == "ours"].reset_index(drop=True)
    sources = [("finetune", "standalone"), ("zeroshot", "partial"), ("finetune", "partial"),
               ("zeroshot", "full"), ("finetune", "full")]
    for (_, row), (kind, mode) in zip(ours.iterrows(), sources):
        for ds in ("us8k", "esc50"):
            mean, std, ci95, n = finetune_pct(ds, mode) if kind == "finetune" else zeroshot_pct(ds, mode)
            assert (row[f"{ds}_measured"], row[f"{ds}_std"], row[f"{ds}_ci95"], row[f"{ds}_n_folds"]) == (
                mean, std, ci95, n), (row["model"], ds)
    full_target = ours.iloc[4]
    assert full_target["us8k_paper"] == 90.07 and full_target["esc50_paper"] == 97.15
    # by hand: folds 0.88, 0.89, 0.90 -> std 1 point, ci95 = 4.3027 * 1 / sqrt(3)
    assert full_target["us8k_measured"] == 89.0 and full_target["us8k_std"] == 1.0
    assert full_target["us8k_ci95"] == 2.48


def test_table4_values(tables):
    t4 = tables["table4"]
    for i, key in enumerate(QUERY_KEYS):
        row = t4.iloc[i]
        assert f"{row['query']}->{row['result']}" == key.split("/")[1]
        for model in ("partial", "full"):
            for metric, value in query_scores(model, i).items():
                assert row[f"{model}_{metric}_measured"] == round(100 * value, 2)
                assert row[f"{model}_{metric}_paper"] == PAPER["table4"]["rows"][i][f"{model}_{metric}"]


def test_percentages_round_to_two_decimals(metrics_root):
    write_metrics(metrics_root, "imagenet/partial.json", {"accuracy": 0.123456}, "embedded")
    assert build_table("table2", metrics_root, "embedded").iloc[0]["partial_measured"] == 12.35


@pytest.mark.parametrize(
    "rel",
    ["finetune/us8k/standalone/fold2.json", "finetune/esc50/full/fold1.json", "zeroshot/us8k/full.json",
     "audioset/standalone.json", "audioset/partial.json", "imagenet/full.json", "querying/partial.json"],
)
def test_missing_file_is_an_error_naming_it(metrics_root, rel):
    (metrics_root / rel).unlink()
    with pytest.raises(MissingMetricsError, match=rel.replace("/", "[/]")) as info:
        build_tables(metrics_root, "embedded")
    assert str(metrics_root / rel) in str(info.value)


def test_missing_fold_inside_zeroshot_file(metrics_root):
    rel = "zeroshot/esc50/partial.json"
    data = read_json(metrics_root / rel)
    del data["metrics"]["folds"]["2"]
    write_json(metrics_root / rel, data)
    with pytest.raises(MissingMetricsError, match="fold 2"):
        build_table("table3", metrics_root, "embedded")


def test_explicit_folds_must_all_exist(metrics_root):
    build_tables(metrics_root, "embedded", folds={"us8k": [1, 2], "esc50": [1, 2]})  # a subset is fine
    with pytest.raises(MissingMetricsError, match="fold4"):
        build_table("table1", metrics_root, "embedded", folds={"us8k": [1, 2, 3, 4]})


def test_missing_querying_key(metrics_root):
    rel = "querying/full.json"
    data = read_json(metrics_root / rel)
    del data["metrics"]["esc50/text->audio"]
    write_json(metrics_root / rel, data)
    with pytest.raises(MissingMetricsError, match="esc50/text->audio"):
        build_table("table4", metrics_root, "embedded")


def test_each_table_needs_only_its_files(metrics_root):
    for rel in ("querying/partial.json", "imagenet/full.json"):
        (metrics_root / rel).unlink()
    assert len(build_table("table1", metrics_root, "embedded")) == 3
    assert len(build_table("table3", metrics_root, "embedded")) == 16


def test_foreign_profile_is_an_error_naming_the_file(metrics_root):
    rel = "finetune/esc50/partial/fold2.json"
    data = read_json(metrics_root / rel)
    data["profile"] = "smoke"
    write_json(metrics_root / rel, data)
    with pytest.raises(ProfileMismatchError, match="smoke") as info:
        build_tables(metrics_root, "embedded")
    assert str(metrics_root / rel) in str(info.value)
    with pytest.raises(ProfileMismatchError):  # and the whole tree asked for as another profile
        build_table("table1", metrics_root, "paper")


@pytest.mark.parametrize("bad", [89.5, -0.1, None, "0.9", True])
def test_values_must_be_fractions(metrics_root, bad):
    write_metrics(metrics_root, "audioset/standalone.json", {"map_audio": bad}, "embedded")
    with pytest.raises(MetricsError, match="fraction"):
        build_table("table1", metrics_root, "embedded")


def test_write_tables_plain_csv_round_trip(tables, tmp_path):
    paths = write_tables(tables, tmp_path / "results")
    assert sorted(p.name for p in paths.values()) == ["table1.csv", "table2.csv", "table3.csv", "table4.csv"]
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == sorted(p.name for p in paths.values())
    for name, path in paths.items():
        back = pd.read_csv(path)
        assert list(back.columns) == list(tables[name].columns)
        assert (back["profile"] == "embedded").all()
        assert path.read_text().splitlines()[0].startswith(tables[name].columns[0])  # header first, nothing above
    t3 = pd.read_csv(paths["table3"])
    assert t3.loc[15, "us8k_measured"] == tables["table3"].loc[15, "us8k_measured"]
    assert t3.loc[0, "us8k_measured"] != t3.loc[0, "us8k_measured"]  # baseline: empty -> NaN


def test_metrics_summary(tables):
    summary = metrics_summary(tables)
    assert summary["profile"] == "embedded"
    assert summary["table1/AudioSet/mAP"] == 30.0
    assert summary["table3/AudioCLIP (full training)/on-target/us8k"] == 89.0
    assert summary["table3/AudioCLIP (full training)/zero-shot/us8k"] == zeroshot_pct("us8k", "full")[0]
    assert summary["table2/ImageNet/image/accuracy/zero-shot/partial"] == 40.51
    assert summary["table4/ESC-50/text->audio/full/map"] == round(100 * query_scores("full", 6)["map"], 2)
    assert not any(k.startswith("table3/Human") for k in summary)  # baselines are not ours
    # 3 + 8 * 2 + 5 * 2 + 7 * 6 measured cells, plus the profile
    assert len(summary) == 3 + (16 + 4) + (10 + 6) + 42 + 1


def test_metrics_summary_refuses_mixed_profiles(tables, tmp_path):
    other = tmp_path / "work" / "paper" / "metrics"
    fabricate(other, "paper")
    mixed = dict(tables, table4=build_table("table4", other, "paper"))
    with pytest.raises(ProfileMismatchError):
        metrics_summary(mixed)


def test_metrics_summary_from_csvs_read_back(tables, tmp_path):
    # the CLI (metrics-json) summarises the CSVs the table jobs wrote, not the in-memory frames
    paths = write_tables(tables, tmp_path)
    frames = {name: pd.read_csv(path) for name, path in paths.items()}
    assert metrics_summary(frames) == metrics_summary(tables)


def test_build_only_some_tables(metrics_root):
    (metrics_root / "querying" / "full.json").unlink()
    assert list(build_tables(metrics_root, "embedded", only=["table3", "table1"])) == ["table1", "table3"]
    with pytest.raises(ValueError, match="table5"):
        build_tables(metrics_root, "embedded", only=["table5"])


def test_fold_missing_in_one_finetune_mode_is_found_from_the_others(metrics_root):
    # fold 3 exists for partial and full fine-tuning only: the standalone mean must not quietly use 2 folds
    for model in ("partial", "full"):
        rel = f"zeroshot/us8k/{model}.json"
        data = read_json(metrics_root / rel)
        del data["metrics"]["folds"]["3"]
        write_json(metrics_root / rel, data)
    (metrics_root / "finetune/us8k/standalone/fold3.json").unlink()
    with pytest.raises(MissingMetricsError, match="standalone/fold3.json"):
        build_table("table1", metrics_root, "embedded")
