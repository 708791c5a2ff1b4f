"""`metaal query`: picks from a user's partly labelled CSV with the shipped policy."""

import numpy as np
import pandas as pd
import pytest

from metaal.data import load_labelled_and_unlabelled
from metaal.experiments.cli import main


def _messy_csv(path, n=60, labelled=12, seed=0):
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n).astype(object)
    label = np.where(x1 + 0.5 * x2 > 0, "spam", "ham").astype(object)
    x2[rng.choice(n, 6, replace=False)] = np.nan  # missing values: imputed, not an error
    colour[rng.choice(n, 4, replace=False)] = None
    label[labelled:] = None  # rows without a label are the pool
    label[:2] = ["spam", "ham"]
    pd.DataFrame({"x1": x1, "x2": x2, "colour": colour, "label": label}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("policy", ["default", "margin"])
def test_query_picks_distinct_unlabelled_rows_of_the_requested_size(tmp_path, policy, capsys):
    data = _messy_csv(tmp_path / "pool.csv")
    out = tmp_path / "picks.csv"
    rc = main(
        ["query", "--policy", policy, "--data", str(data), "--target", "label"]
        + ["--batch-size", "10", "--out", str(out)]
    )
    assert rc == 0
    picks = pd.read_csv(out)
    assert list(picks.columns) == ["order", "row", "score"]  # as printed, in that order
    assert len(picks) == 10
    assert picks.row.is_unique
    _, y, _ = load_labelled_and_unlabelled(data, "label")
    assert np.isnan(y[picks.row.to_numpy()]).all(), "a labelled row was returned"
    assert np.isfinite(picks.score).all()


def test_query_same_seed_same_picks(tmp_path):
    data = _messy_csv(tmp_path / "pool.csv")
    outs = []
    for i in range(2):
        out = tmp_path / f"picks{i}.csv"
        args = ["query", "--data", str(data), "--target", "label", "--out", str(out)]
        assert main(args + ["--batch-size", "5"]) == 0
        outs.append(pd.read_csv(out))
    pd.testing.assert_frame_equal(outs[0], outs[1])


def test_missing_policy_path_is_a_clear_error(tmp_path, capsys):
    data = _messy_csv(tmp_path / "pool.csv")
    rc = main(
        ["query", "--policy", str(tmp_path / "nope.msgpack"), "--data", str(data)]
        + ["--target", "label"]
    )
    assert rc == 2
    assert "policy file not found" in capsys.readouterr().err


def test_a_file_that_is_not_a_policy_is_a_clear_error(tmp_path, capsys):
    data = _messy_csv(tmp_path / "pool.csv")
    bogus = tmp_path / "bogus.msgpack"
    bogus.write_bytes(b"definitely not msgpack \x00\xff")
    assert main(["query", "--policy", str(bogus), "--data", str(data), "--target", "label"]) == 2
    assert "not a metaal policy file" in capsys.readouterr().err


def test_csv_without_unlabelled_rows_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "full.csv"
    pd.DataFrame({"x": [1.0, 2.0, 3.0], "label": ["a", "b", "a"]}).to_csv(path, index=False)
    assert main(["query", "--data", str(path), "--target", "label"]) == 2
    assert "nothing to query" in capsys.readouterr().err


def test_fewer_labelled_rows_than_classes_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "one.csv"
    pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "label": ["a", None, None, None]}).to_csv(
        path, index=False
    )
    assert main(["query", "--data", str(path), "--target", "label", "--batch-size", "1"]) == 2
    err = capsys.readouterr().err
    assert "labelled row" in err and "two classes" in err


def test_batch_larger_than_the_pool_is_a_clear_error(tmp_path, capsys):
    data = _messy_csv(tmp_path / "pool.csv", n=20, labelled=15)
    assert main(["query", "--data", str(data), "--target", "label", "--batch-size", "50"]) == 2
    assert "--batch-size 50" in capsys.readouterr().err
