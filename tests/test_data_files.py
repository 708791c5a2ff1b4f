"""Users' files: every bad input fails with a DataError naming the file and the fix (issue 12)."""

from __future__ import annotations

import gzip
import io
import zipfile

import numpy as np
import pandas as pd
import pytest

from metaal.data import DataError, encode_frame, load_file, load_labelled_and_unlabelled
from metaal.data.task import min_class_rows, min_split_rows


def numbers(n: int = 60) -> str:
    """Rows `i,i%7,label` of a valid file: three classes of 20, two numeric features."""
    return "".join(f"{i},{i % 7},{'abc'[i % 3]}\n" for i in range(n))


def zipped(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


MIXED = "".join(
    f"{'foo' if i in (3, 23) else '?' if i == 43 else i},{'ab'[i % 2]}\n" for i in range(60)
)
OWN_CLASS = "".join(f"{i},c{i:02d}\n" for i in range(40))
RARE = "".join(f"{i},{'rare' if i < 3 else 'ab'[i % 2]}\n" for i in range(100))
INFINITE = "".join(f"{'inf' if i in (4, 9) else i},{'abc'[i % 3]}\n" for i in range(60))
COMMAS = "".join(f"{i},5;{'ab'[i % 2]}\n" for i in range(40))
# Line 3 is blank and lines 4-5 hold one quoted cell: the bad value is on line 7.
BLANKS = 'a,b,label\n1,x,a\n\n2,"two\nlines",b\n3,y,a\nfoo,z,b\n' + "".join(
    f"{i},w,{'ab'[i % 2]}\n" for i in range(4, 60)
)
XLSX = zipped({"[Content_Types].xml": "<x/>", "xl/workbook.xml": "<x/>"})
ODS = zipped({"mimetype": "application/vnd.oasis.opendocument.spreadsheet"})

# (file name, contents, keyword arguments, fragments the message must hold)
BAD = [
    (
        "dup.csv",
        "a,b,a,label\n" + numbers().replace("\n", ",0\n"),
        {},
        ["repeated column names: 'a' (columns 1, 3)", "give every column its own name"],
    ),
    ("dupspace.csv", "a, a ,label\n" + numbers(), {}, ["'a' (columns 1, 2)"]),
    (
        "mixed.csv",
        "age,label\n" + MIXED,
        {},
        [
            "column 'age' is numeric except for 3 of its 60 values, such as 'foo', '?' "
            "(lines 5, 25, 45)",
            "fix them or leave them empty",
        ],
    ),
    (
        "blanks.csv",
        BLANKS,
        {},
        ["'a' is numeric except for 1 of its 60 values, such as 'foo' (line 7)"],
    ),
    (
        "comma.csv",
        "w;label\n" + COMMAS,
        {},
        [
            "column 'w' holds numbers written with commas, such as '0,5', '1,5', '2,5' "
            "(lines 2, 3, 4)",
            "with a decimal point",
        ],
    ),
    ("few.csv", "a,label\n1,x\n2,y\n", {}, ["only 2 rows: too few to split", "at least 32"]),
    (
        "own.csv",
        "a,label\n" + OWN_CLASS,
        {},
        [
            "target column 'label' has classes too small to split: 'c00' (1 row), 'c01' (1 row)",
            "and 30 more; with 40 rows each class needs at least 4",
            "merge them into other classes",
        ],
    ),
    (
        "rare.csv",
        "a,label\n" + RARE,
        {},
        ["too small to split: 'rare' (3 rows); with 100 rows each class needs at least 7"],
    ),
    (
        "single.csv",
        "a,label\n" + "".join(f"{i},x\n" for i in range(40)),
        {},
        ["target column 'label' has a single class ('x')"],
    ),
    (
        "unlabelled.csv",
        "a,b,label\n" + numbers().replace("\n2,2,c\n", "\n2,2,\n"),
        {},
        ["target column 'label' has 1 missing value(s) (line 4)", "drop or label those rows"],
    ),
    ("infinite.csv", "a,label\n" + INFINITE, {}, ["'a' holds 2 infinite value(s) (lines 6, 11)"]),
    (
        "colon.csv",
        "a:b:label\n" + numbers().replace(",", ":"),
        {},
        ["'label' not found; columns are ['a:b:label']", "split at commas", "tabs or '|'"],
    ),
    ("xlsx.csv", XLSX, {}, ["this is an Excel .xlsx workbook", "save it as CSV UTF-8"]),
    ("ods.csv", ODS, {}, ["this is an OpenDocument spreadsheet", "save it as CSV UTF-8"]),
    ("archive.csv", zipped({"d.csv": "a,label\n"}), {}, ["this is a zip archive", "unzip it"]),
    ("xls.csv", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(64), {}, ["an Excel .xls file"]),
    ("parquet.csv", b"PAR1" + bytes(64) + b"PAR1", {}, ["a Parquet file", "to_csv"]),
    ("gzip.csv", gzip.compress(b"a,label\n1,x\n"), {}, ["gzip-compressed", "gunzip"]),
    ("utf16.tsv", "a\tlabel\n1\tx\n".encode("utf-16"), {}, ["UTF-16 text", "CSV UTF-8"]),
    ("nul.csv", b"a,label\n\x00\x01\x02", {}, ["this is a binary file"]),
    ("latin1.csv", "a,label\n1,caf\xe9\n".encode("latin-1"), {}, ["not UTF-8 text"]),
    (
        "drop.csv",
        "a,b,label\n" + numbers(),
        {"drop": ["b", "zz"]},
        ["column(s) ['zz'] given to drop or as the id are not in the file; columns are "],
    ),
    (
        "droptarget.csv",
        "a,b,label\n" + numbers(),
        {"drop": ["label"]},
        ["'label' is the target column"],
    ),
    ("noid.csv", "a,b,label\n" + numbers(), {"id_column": "key"}, ["column(s) ['key'] given"]),
    (
        "both.csv",
        "a,b,label\n" + numbers(),
        {"drop": ["a"], "id_column": "a"},
        ["'a' is both dropped and the id column"],
    ),
]


def put(path, contents):
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    else:
        path.write_text(contents)
    return path


@pytest.mark.parametrize(("name", "contents", "kwargs", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_bad_file_is_a_data_error_naming_file_and_fix(tmp_path, name, contents, kwargs, fragments):
    path = put(tmp_path / name, contents)
    with pytest.raises(DataError) as err:
        load_file(path, target="label", **kwargs)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message


# Problems of the file itself are found for querying too; the split's needs are not.
@pytest.mark.parametrize("case", ["dup.csv", "mixed.csv", "comma.csv", "xlsx.csv", "drop.csv"])
def test_querying_finds_the_same_problems(tmp_path, case):
    name, contents, kwargs, fragments = next(b for b in BAD if b[0] == case)
    path = put(tmp_path / name, contents)
    with pytest.raises(DataError, match=f"^{path}: ") as err:
        load_labelled_and_unlabelled(path, target="label", **kwargs)
    assert fragments[0] in str(err.value)


def test_npz_id_array_must_exist_and_match_rows(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.ones((45, 2)), y=np.arange(45) % 3, key=np.arange(44))
    with pytest.raises(DataError, match=r"NPZ has no array named 'ids'; it holds \['X', 'key', "):
        load_file(path, id_column="ids")
    with pytest.raises(DataError, match=r"id array 'key' must hold one id per row, shape \(45,\)"):
        load_file(path, id_column="key")


# --- what the split needs -------------------------------------------------------------------


def test_minimum_rows_and_class_sizes_follow_the_split_sizes():
    assert min_split_rows() == 32  # 15 validation + 15 test + 2 pool
    # n / smallest part: pool for tiny files, 15% holdouts, then the 500-row holdout cap.
    assert [min_class_rows(n) for n in (32, 40, 100, 200, 3000, 5000, 20000)] == [
        16,
        4,
        7,
        7,
        7,
        10,
        40,
    ]


def test_the_smallest_allowed_file_and_classes_load(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,label\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(32)))
    assert np.bincount(load_file(path, target="label").y).tolist() == [16, 16]
    path.write_text("a,label\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(31)))
    with pytest.raises(DataError, match="only 31 rows"):
        load_file(path, target="label")
    rare = "".join(f"{i},{'rare' if i < 7 else 'ab'[i % 2]}\n" for i in range(100))
    path.write_text("a,label\n" + rare)
    assert np.bincount(load_file(path, target="label").y).tolist() == [46, 47, 7]


# --- high-cardinality categoricals ----------------------------------------------------------


def state_counts() -> dict[str, int]:
    """51 levels with skewed counts summing to 5000, ranked in an order unrelated to names."""
    counts = [300 - 10 * i for i in range(20)]  # 300..110: the 20 kept
    counts += [100] + [30] * 26 + [8, 8, 2, 2]  # 31 rare levels, two below 5 rows
    names = [f"S{k:02d}" for k in np.random.default_rng(0).permutation(51)]
    return dict(zip(names, counts, strict=True))


def test_a_51_level_column_keeps_20_levels_and_groups_the_rest(tmp_path):
    counts = state_counts()
    assert sum(counts.values()) == 5000
    states = np.random.default_rng(1).permutation(np.repeat(list(counts), list(counts.values())))
    frame = pd.DataFrame({"x": np.arange(5000.0), "state": states, "label": np.arange(5000) % 2})
    path = tmp_path / "states.csv"
    frame.to_csv(path, index=False)
    task = load_file(path, target="label")
    kept = sorted(list(counts)[:20])
    assert task.X.shape == (5000, 1 + 20 + 1)  # x, 20 levels in name order, "other"
    block = task.X[:, 1:]
    assert (block.sum(axis=1) == 1).all()
    for level, count in counts.items():
        rows = states == level
        column = kept.index(level) if level in kept else 20
        assert (block[rows, column] == 1).all() and rows.sum() == count
    assert block[:, 20].sum() == 5000 - sum(list(counts.values())[:20]) == 900


def test_grouping_matches_scikit_learn_when_no_counts_tie():
    sklearn_preprocessing = pytest.importorskip("sklearn.preprocessing")
    counts = state_counts()
    states = np.random.default_rng(2).permutation(np.repeat(list(counts), list(counts.values())))
    states = states.astype(object)
    frame = pd.DataFrame({"state": states, "label": np.arange(5000) % 2})
    ours = encode_frame(frame, "label", name="states").X
    encoder = sklearn_preprocessing.OneHotEncoder(
        max_categories=21, min_frequency=5, sparse_output=False
    )
    np.testing.assert_array_equal(ours, encoder.fit_transform(frame[["state"]]))


def encode_levels(levels: list[str]) -> np.ndarray:
    frame = pd.DataFrame({"level": levels, "label": np.arange(len(levels)) % 2})
    return encode_frame(frame, "label", name="t").X


def test_rare_levels_of_wide_columns_go_to_other_and_ties_keep_earlier_names():
    # 30 levels, 12 of them seen 5 times or more: 12 columns and "other".
    levels = [f"L{k:02d}" for k in range(12) for _ in range(5)] + [f"R{k:02d}" for k in range(18)]
    X = encode_levels(levels)
    assert X.shape == (78, 13)
    assert X[60:, 12].tolist() == [1.0] * 18 and X[:60, 12].sum() == 0
    # 25 levels of 10 rows each: the first 20 names are kept, the last 5 share "other".
    X = encode_levels([f"T{k:02d}" for k in range(25) for _ in range(10)])
    assert X.shape == (250, 21)
    np.testing.assert_array_equal(X[:200, :20], np.repeat(np.eye(20), 10, axis=0))
    assert X[200:, 20].tolist() == [1.0] * 50


def test_columns_up_to_20_levels_are_never_grouped_and_missing_stays_nan():
    levels = [f"L{k:02d}" for k in range(20)] + [None]  # every level once, below 5 rows
    X = encode_levels(levels)
    np.testing.assert_array_equal(X[:20], np.eye(20))
    assert np.isnan(X[20]).all()
    X = encode_levels([f"L{k:02d}" for k in range(21)] + [None])
    assert X.shape == (22, 1)  # every level is rare: one "other" column
    assert X[:21, 0].tolist() == [1.0] * 21 and np.isnan(X[21, 0])


# --- separators, blanks, ids and dropped columns --------------------------------------------


def mixed_frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=n).round(3),
            "colour": rng.choice(["red", "dark, blue", "green"], size=n),
            "label": rng.choice(["spam", "ham"], size=n),
        }
    )
    frame.loc[[3, 10], "x"] = np.nan
    frame.loc[[5], "colour"] = None
    return frame


@pytest.mark.parametrize(
    ("sep", "suffix"), [(";", ".csv"), ("\t", ".csv"), ("|", ".csv"), ("\t", ".tsv")]
)
def test_other_separators_load_the_same_arrays_as_commas(tmp_path, sep, suffix):
    frame = mixed_frame()
    frame.to_csv(tmp_path / "comma.csv", index=False)
    frame.to_csv(tmp_path / f"other{suffix}", index=False, sep=sep)
    want = load_file(tmp_path / "comma.csv", target="label")
    got = load_file(tmp_path / f"other{suffix}", target="label")
    assert want.X.shape == (60, 4)  # x, three colours
    np.testing.assert_array_equal(got.X, want.X)
    np.testing.assert_array_equal(got.y, want.y)
    assert got.class_names == want.class_names == ("ham", "spam")


def test_semicolons_inside_a_comma_file_do_not_fool_the_sniffer(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("x,tags,label\n" + "".join(f"{i},a;b,{'ab'[i % 2]}\n" for i in range(40)))
    task = load_file(path, target="label")
    np.testing.assert_array_equal(task.X, np.c_[np.arange(40.0), np.ones(40)])


def test_cells_of_spaces_are_missing(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(
        "x,label\n" + "".join(f"{' ' if i == 2 else i},{'ab'[i % 2]}\n" for i in range(40))
    )
    X = load_file(path, target="label").X
    assert X.shape == (40, 1) and np.isnan(X[2, 0]) and X[3, 0] == 3.0


def test_id_column_is_not_a_feature_and_round_trips(tmp_path):
    frame = mixed_frame()
    ids = [f"{i:03d}" for i in range(60)]  # leading zeros: read as text, kept
    frame.insert(1, "key", ids)
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    task = load_file(path, target="label", id_column="key")
    without = load_file(path, target="label", drop=["key"])
    assert task.ids == tuple(ids) and without.ids is None
    np.testing.assert_array_equal(task.X, without.X)
    assert task.X.shape == (60, 4)
    frame.loc[50:, "label"] = None
    frame.to_csv(path, index=False)
    data = load_labelled_and_unlabelled(path, target="label", id_column="key")
    X, y, class_names = data  # still unpacks as the three-tuple
    assert data.ids == tuple(ids) and X.shape == (60, 4) and np.isnan(y[50:]).all()


def test_drop_removes_columns_before_encoding(tmp_path):
    frame = mixed_frame()
    frame["noise"] = ["?", "a"] * 30  # a category: two more columns unless dropped
    frame["junk"] = ["1", "x"] + ["2"] * 58  # mostly numeric: an error unless dropped
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="column 'junk' is numeric except for 1"):
        load_file(path, target="label")
    task = load_file(path, target="label", drop=["junk", "noise"])
    frame[["x", "colour", "label"]].to_csv(tmp_path / "plain.csv", index=False)
    np.testing.assert_array_equal(task.X, load_file(tmp_path / "plain.csv", target="label").X)


# --- the command line -----------------------------------------------------------------------


def test_query_drops_columns_and_writes_the_id_of_each_pick(tmp_path, capsys):
    from metaal.experiments.cli import main

    frame = mixed_frame()
    frame.insert(0, "key", [f"k{i:03d}" for i in range(60)])
    frame["junk"] = ["1", "x"] + ["2"] * 58  # mostly numeric: refused unless dropped
    frame.loc[12:, "label"] = None
    path, out = tmp_path / "pool.csv", tmp_path / "picks.csv"
    frame.to_csv(path, index=False)
    argv = ["query", "--policy", "margin", "--data", str(path), "--target", "label"]
    assert main([*argv, "--id", "key"]) == 2
    assert "column 'junk' is numeric except for 1" in capsys.readouterr().err
    argv += ["--id", "key", "--drop", "junk", "--batch-size", "4", "--out", str(out)]
    assert main(argv) == 0
    picks = pd.read_csv(out, dtype={"key": str})
    assert list(picks.columns) == ["order", "row", "key", "score"]  # as printed (issue 12)
    assert picks.key.tolist() == [f"k{row:03d}" for row in picks.row]
    assert (picks.row >= 12).all() and len(picks) == 4
    printed = capsys.readouterr().out.splitlines()
    assert printed[1].split() == list(picks.columns) and picks.key[0] in printed[2]


def test_evaluate_passes_drop_and_id_to_every_file(tmp_path, capsys):
    import argparse

    from metaal.experiments import evaluate

    frame = mixed_frame()
    frame.insert(0, "key", range(60))
    frame["noise"] = ["?", "a"] * 30
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_csv(tmp_path / "b.csv", index=False)
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    args = parser.parse_args(
        ["--data", str(tmp_path / "a.csv"), "--data", str(tmp_path / "b.csv")]
        + ["--target", "label", "--drop", "colour", "--drop", "noise", "--id", "key"]
    )
    assert args.drop == ["colour", "noise"] and args.id == "key"
    tasks = evaluate.load_tasks(args.data, args.target * 2, args.drop, args.id)
    assert [t.name for t in tasks] == ["a.csv", "b.csv"]
    for task in tasks:
        np.testing.assert_array_equal(task.X[:, 0], frame.x.to_numpy())
        assert task.X.shape == (60, 1) and task.ids == tuple(map(str, range(60)))
    assert evaluate.main(parser.parse_args(["--suite", "heldout", "--id", "key"])) == 2
    assert "--drop and --id name columns of --data files" in capsys.readouterr().err


def test_a_51_level_column_evaluates_end_to_end(tmp_path):
    from metaal.experiments.evaluate import evaluate

    rng = np.random.default_rng(4)
    counts = state_counts()
    states = rng.permutation(np.repeat(list(counts), list(counts.values())))[:800]
    x = rng.normal(size=800)
    frame = pd.DataFrame({"x": x, "state": states, "churn": (x > 0).astype(int)})
    frame.to_csv(tmp_path / "churn.csv", index=False)
    results = evaluate(
        [str(tmp_path / "churn.csv")], strategies=["margin"], seeds=2, budget=6,
        targets=["churn"], out_dir=None, progress=False,
    )  # fmt: skip
    assert len(results) == 2 * (6 + 1) and set(results.dataset) == {"churn.csv"}
    # x decides the label: six margin queries from five labels learn it
    final = results[results.step == 6].test_accuracy
    assert final.mean() > 0.8
