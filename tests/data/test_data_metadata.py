"""Metadata parsers: class order and names, and errors that name file, row and column."""

import shutil

import pytest

from pipeline.data import metadata as md
from pipeline.data.metadata import MetadataError

ESC_HEADER = "filename,fold,target,category,esc10,src_file,take\n"
US8K_HEADER = "slice_file_name,fsID,start,end,salience,fold,classID,class\n"


def _esc(tmp_path, body: str, header: str = ESC_HEADER):
    (tmp_path / "meta").mkdir(exist_ok=True)
    (tmp_path / "meta" / "esc50.csv").write_text(header + body)
    return md.read_esc50(tmp_path)


def test_synthetic_esc50(synthetic):
    meta = md.read("esc50", synthetic["esc50"])
    # classes ordered by the sorted original targets 0, 10, 20, 38, ...; '_' -> ' '
    assert meta.class_names == ["dog", "rain", "crying baby", "clock tick", "helicopter", "chainsaw", "siren",
                                "engine", "train", "church bells"]
    items = meta.items
    assert sorted(items["label"].unique()) == list(range(10))
    assert all(meta.class_names[lab] == cat.replace("_", " ") for lab, cat in zip(items["label"], items["category"]))
    assert all(p.endswith(f"/audio/{s}") for p, s in zip(items["path"], items["source"]))
    assert items["labels"].map(len).eq(1).all() and not meta.multilabel


def test_synthetic_us8k_audioset_imagenet(synthetic):
    us = md.read("us8k", synthetic["us8k"])
    assert us.class_names[3] == "dog bark" and len(us.class_names) == 10
    assert all(f"/fold{f}/" in p for f, p in zip(us.items["fold"], us.items["path"]))
    au = md.read("audioset", synthetic["audioset"])
    assert au.multilabel and au.class_names[:2] == ["Dog", "Bark"] and len(au.class_names) == 14
    assert set(au.items["split"]) == {"train", "eval"} and (au.items["label"] == -1).all()
    assert all(0 in labs for labs in au.items["labels"] if 1 in labs)  # Bark implies Dog
    im = md.read("imagenet", synthetic["imagenet"])
    assert im.class_names == ["dog", "train", "chainsaw", "helicopter", "siren", "church bell"]
    assert len(im.items) == 24


def test_real_esc50_and_us8k(realdata):
    esc = md.read_esc50(realdata / "esc50")
    assert len(esc.items) == 21
    assert esc.class_names[0] == "dog" and "crying baby" in esc.class_names  # target 0 first
    targets = sorted(esc.items["target"].unique())
    assert [esc.class_names[esc.items.loc[esc.items["target"] == t, "label"].iloc[0]] for t in targets] == \
        [esc.items.loc[esc.items["target"] == t, "category"].iloc[0].replace("_", " ") for t in targets]
    us = md.read_us8k(realdata / "urbansound8k")
    assert len(us.items) == 100 and set(us.items["fold"]) == {1, 10}
    assert us.items["start"].isna().all()  # this copy leaves start/end/salience blank: allowed
    assert us.class_names == ["air conditioner", "car horn", "children playing", "dog bark", "drilling",
                              "engine idling", "gun shot", "jackhammer", "siren", "street music"]


def test_missing_column_names_file_and_column(tmp_path):
    with pytest.raises(MetadataError, match=r"esc50\.csv.*missing column.*'take'"):
        _esc(tmp_path, "1-1-A-0.wav,1,0,dog,True,1\n", header="filename,fold,target,category,esc10,src_file\n")


def test_bad_cells_name_row_and_column(tmp_path):
    ok = "1-1-A-0.wav,1,0,dog,True,1,A\n"
    with pytest.raises(MetadataError, match=r"esc50\.csv: row 3, column 'fold': 6 outside the range 1\.\.5"):
        _esc(tmp_path, ok + "6-2-A-0.wav,6,0,dog,True,2,A\n")
    with pytest.raises(MetadataError, match=r"row 3, column 'target': 'x' is not an integer"):
        _esc(tmp_path, ok + "1-2-A-0.wav,1,x,dog,True,2,A\n")
    with pytest.raises(MetadataError, match=r"row 3, column 'filename': duplicate '1-1-A-0.wav' \(first at row 2\)"):
        _esc(tmp_path, ok + ok)
    with pytest.raises(MetadataError, match=r"row 3, column 'category': target 0 is 'cat' here but 'dog'"):
        _esc(tmp_path, ok + "1-2-A-0.wav,1,0,cat,True,2,A\n")
    with pytest.raises(MetadataError, match=r"row 2, column 'esc10'"):
        _esc(tmp_path, "1-1-A-0.wav,1,0,dog,yes,1,A\n")


def test_us8k_names_stripped_and_fold_range(tmp_path):
    (tmp_path / "metadata").mkdir()
    csv = tmp_path / "metadata" / "UrbanSound8K.csv"
    csv.write_text(US8K_HEADER + "1-3-0-0.wav,1,0.0,0.5,1,10,3, dog_bark \n2-1-0-0.wav,2,,,,1,1,car_horn\n")
    meta = md.read_us8k(tmp_path)
    assert meta.class_names == ["car horn", "dog bark"] and meta.items["label"].tolist() == [1, 0]
    csv.write_text(US8K_HEADER + "1-3-0-0.wav,1,0.0,0.5,1,11,3,dog_bark\n")
    with pytest.raises(MetadataError, match=r"UrbanSound8K\.csv: row 2, column 'fold': 11 outside"):
        md.read_us8k(tmp_path)
    csv.write_text(US8K_HEADER + "1-3-0-0.wav,1,zero,0.5,1,1,3,dog_bark\n")
    with pytest.raises(MetadataError, match=r"row 2, column 'start'"):
        md.read_us8k(tmp_path)


def _audioset(tmp_path, synthetic, train_lines: list[str] | None = None, eval_lines: list[str] | None = None):
    root = tmp_path / "as"
    shutil.copytree(synthetic["audioset"], root, ignore=shutil.ignore_patterns("audio", "frames"))
    for name, lines in (("balanced_train_segments.csv", train_lines), ("eval_segments.csv", eval_lines)):
        if lines is not None:
            (root / name).write_text("# a\n# b\n# YTID, start_seconds, end_seconds, positive_labels\n" + "".join(lines))
    return root


def test_audioset_errors(tmp_path, synthetic):
    good = 'abcdefghijk, 30.000, 31.000, "/m/0bt9lr,/m/05tny_"\n'
    root = _audioset(tmp_path, synthetic, [good, 'bbcdefghijk, 0.000, 1.000, "/m/nope"\n'])
    with pytest.raises(MetadataError, match=r"balanced_train_segments\.csv: row 5, column 'positive_labels': "
                                            r"unknown label\(s\) \['/m/nope'\]"):
        md.read_audioset(root)
    root = _audioset(tmp_path / "2", synthetic, [good, good])
    with pytest.raises(MetadataError, match=r"row 5, column 'YTID': duplicate segment"):
        md.read_audioset(root)
    root = _audioset(tmp_path / "3", synthetic, [good], [good])
    with pytest.raises(MetadataError, match=r"eval_segments\.csv.*also in balanced_train_segments\.csv"):
        md.read_audioset(root)
    root = _audioset(tmp_path / "4", synthetic, ['../../etc/x, 0.0, 1.0, "/m/0bt9lr"\n'])
    with pytest.raises(MetadataError, match=r"row 4, column 'YTID'"):
        md.read_audioset(root)
    root = _audioset(tmp_path / "5", synthetic, [good])
    meta = md.read_audioset(root)
    row = meta.items[meta.items["split"] == "train"].iloc[0]
    assert row["labels"] == (0, 1) and row["source"] == "abcdefghijk_30000.wav"


def test_audioset_class_index_must_be_contiguous(tmp_path):
    path = tmp_path / "class_labels_indices.csv"
    path.write_text('index,mid,display_name\n0,/m/a,"A"\n2,/m/b,"B"\n')
    with pytest.raises(MetadataError, match=r"row 3, column 'index': expected 1"):
        md.read_audioset_labels(path)


def test_imagenet_errors(tmp_path, synthetic):
    root = tmp_path / "im"
    shutil.copytree(synthetic["imagenet"], root)
    (root / "val" / "n12345678").mkdir()
    with pytest.raises(MetadataError, match=r"n12345678.*unknown label"):
        md.read_imagenet(root)
    (root / "val" / "n12345678").rmdir()
    (root / "LOC_synset_mapping.txt").write_text("n90000001 dog\nbad_wnid cat\n")
    with pytest.raises(MetadataError, match=r"LOC_synset_mapping\.txt: row 2, column 'wnid'"):
        md.read_imagenet(root)


def test_audioset_train_split_from_balanced_and_unbalanced_lists(tmp_path, synthetic):
    good = 'abcdefghijk, 30.000, 31.000, "/m/0bt9lr,/m/05tny_"\n'
    other = 'zbcdefghijk, 10.000, 20.000, "/m/0bt9lr"\n'
    root = _audioset(tmp_path, synthetic, [good])
    header = "# a\n# b\n# YTID, start_seconds, end_seconds, positive_labels\n"
    (root / "unbalanced_train_segments.csv").write_text(header + other)
    lists = ("balanced_train_segments.csv", "unbalanced_train_segments.csv")
    meta = md.read("audioset", root, train_segments=lists)
    train = meta.items[meta.items["split"] == "train"]
    assert list(train["ytid"]) == ["abcdefghijk", "zbcdefghijk"]  # the lists in the given order
    assert len(md.read("audioset", root).items) == len(meta.items) - 1  # default: the balanced list only
    (root / "unbalanced_train_segments.csv").write_text(header + other + good)
    with pytest.raises(MetadataError, match=r"unbalanced_train_segments\.csv: row 5, column 'YTID': segment "
                                            r"abcdefghijk at 30.0 s is also in another list"):
        md.read("audioset", root, train_segments=lists)
    with pytest.raises(MetadataError, match=r"nothere\.csv: metadata file not found"):
        md.read("audioset", root, train_segments=("nothere.csv",))


US8K_OK = "1-3-0-0.wav,1,0.0,0.5,1,1,3,dog_bark\n"


@pytest.mark.reliability
@pytest.mark.parametrize("header, body, expected", [
    # a column dropped by an editor or another release of the file
    (US8K_HEADER.replace(",classID", ""), "1-3-0-0.wav,1,0.0,0.5,1,1,dog_bark\n",
     r"UrbanSound8K\.csv: missing column\(s\) \['classID'\]"),
    # the same clip listed twice would be counted twice, and may sit in two folds
    (US8K_HEADER, US8K_OK + US8K_OK.replace(",1,3,", ",2,3,"),
     r"UrbanSound8K\.csv: row 3, column 'slice_file_name': duplicate '1-3-0-0\.wav' \(first at row 2\)"),
    (US8K_HEADER, US8K_OK.replace(",1,3,", ",0,3,"), r"row 2, column 'fold': 0 outside the range 1\.\.10"),
    # UrbanSound8K has the classes 0..9: another id is an unknown label, not an 11th class
    (US8K_HEADER, US8K_OK.replace(",1,3,", ",1,10,"), r"row 2, column 'classID': 10 outside the range 0\.\.9"),
    (US8K_HEADER, US8K_OK + "2-3-0-0.wav,2,,,,1,3,siren\n",
     r"row 3, column 'class': classID 3 is 'siren' here but 'dog_bark' at row 2"),
])
def test_us8k_bad_metadata_names_file_row_and_column(tmp_path, header, body, expected):
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata" / "UrbanSound8K.csv").write_text(header + body)
    with pytest.raises(MetadataError, match=expected):
        md.read_us8k(tmp_path)


@pytest.mark.reliability
def test_esc50_unknown_label_and_fold_zero_name_row_and_column(tmp_path):
    # ESC-50 has the targets 0..49: 50 is an unknown label, not a 51st class of a bigger model head
    with pytest.raises(MetadataError, match=r"esc50\.csv: row 2, column 'target': 50 outside the range 0\.\.49"):
        _esc(tmp_path, "1-1-A-50.wav,1,50,dog,True,1,A\n")
    with pytest.raises(MetadataError, match=r"esc50\.csv: row 2, column 'fold': 0 outside the range 1\.\.5"):
        _esc(tmp_path, "0-1-A-0.wav,0,0,dog,True,1,A\n")


@pytest.mark.reliability
def test_audioset_missing_columns_and_fields_name_the_file(tmp_path, synthetic):
    labels = tmp_path / "class_labels_indices.csv"
    labels.write_text('index,display_name\n0,"Dog"\n')
    with pytest.raises(MetadataError, match=r"class_labels_indices\.csv: missing column\(s\) \['mid'\]"):
        md.read_audioset_labels(labels)
    root = _audioset(tmp_path, synthetic, ['abcdefghijk, 30.000, 31.000\n'])
    with pytest.raises(MetadataError, match=r"balanced_train_segments\.csv: row 4, column 'YTID': expected 4 fields"):
        md.read_audioset(root)
    root = _audioset(tmp_path / "2", synthetic, ['abcdefghijk, 31.000, 30.000, "/m/0bt9lr"\n'])
    with pytest.raises(MetadataError, match=r"row 4, column 'end_seconds': segment 31\.0\.\.30\.0 is empty"):
        md.read_audioset(root)
