"""Tests for experiments.evaluate: the end-to-end pipeline, its outputs, W&B read-back, bad input.

One module-scoped run through the command-line entry (`add_arguments` +
`main`) on three small, clearly structured data sets (iris, wine, breast
cancer as CSV files) with margin, random and a learned policy, 20 seeds,
budget 20; the tests read its files.
"""

from __future__ import annotations

import argparse
import glob
import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets

from metaal import metrics
from metaal.experiments import evaluate
from metaal.policy_net import linear_params, linear_scorer
from metaal.strategies.learned import LearnedStrategy

SEEDS, BUDGET, INIT = 20, 20, 5
STRATEGIES = ("margin", "random", "learned")
GROUP = "iris-wine-cancer"


def parse(argv):
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def csv_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    paths = []
    for name, loader in (
        ("iris", datasets.load_iris),
        ("wine", datasets.load_wine),
        ("cancer", datasets.load_breast_cancer),
    ):
        bunch = loader()
        frame = pd.DataFrame(bunch.data, columns=[f"f{i}" for i in range(bunch.data.shape[1])])
        frame["label"] = np.asarray(bunch.target_names)[bunch.target]
        frame.to_csv(folder / f"{name}.csv", index=False)
        paths.append(str(folder / f"{name}.csv"))
    return paths


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory):
    # A linear policy scoring -margin: margin sampling, read from the observation.
    policy = LearnedStrategy(
        linear_scorer({}),
        linear_params({"margin": -1.0}),
        {"scorer": "metaal.strategies.learned:linear_scorer"},
    )
    return str(policy.save(tmp_path_factory.mktemp("policy") / "margin.msgpack"))


@pytest.fixture(scope="module")
def run_dir(csv_files, policy_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    argv = [a for f in csv_files for a in ("--data", f)]
    argv += ["--target", "label", "--strategies", "margin,random", "--policy", policy_file]
    argv += ["--seeds", str(SEEDS), "--budget", str(BUDGET), "--n-initial", str(INIT)]
    argv += ["--out", str(out), "--wandb-mode", "offline", "--wandb-group", GROUP]
    assert evaluate.main(parse(argv)) == 0
    return out


@pytest.fixture(scope="module")
def results(run_dir):
    return pd.read_csv(run_dir / "results.csv")


def test_results_file_shape_and_pairing(results, csv_files):
    assert tuple(results.columns) == metrics.RESULT_COLUMNS
    assert len(results) == len(csv_files) * len(STRATEGIES) * SEEDS * (BUDGET + 1)
    assert set(results["strategy"]) == set(STRATEGIES)
    np.testing.assert_array_equal(results["n_labeled"], INIT + results["step"])
    # Paired runs: at step 0 (same split, same initial set) every strategy has the same accuracy.
    start = results[results["step"] == 0].pivot_table(
        index=["dataset", "seed"], columns="strategy", values="test_accuracy"
    )
    assert (start.nunique(axis=1) == 1).all()
    # ...while the strategies do choose differently afterwards.
    final = results[results["step"] == BUDGET].pivot_table(
        index=["dataset", "seed"], columns="strategy", values="test_accuracy"
    )
    assert (final["margin"] != final["random"]).any()


def test_learned_policy_reproduces_its_heuristic(results):
    curves = results.pivot_table(
        index=["dataset", "seed", "step"], columns="strategy", values="test_accuracy"
    )
    np.testing.assert_array_equal(curves["learned"], curves["margin"])


def test_margin_beats_random_on_structured_data(run_dir):
    summary = pd.read_csv(run_dir / "summary.csv")
    aulc = summary.pivot(index="dataset", columns="strategy", values="aulc_mean")
    assert (aulc["margin"] > aulc["random"]).all(), aulc


def test_summary_and_report_files(run_dir, results):
    summary = pd.read_csv(run_dir / "summary.csv")
    assert tuple(summary.columns) == metrics.SUMMARY_COLUMNS
    pd.testing.assert_frame_equal(summary, metrics.summarise(results), check_dtype=False)
    report = (run_dir / "report.md").read_text()
    for heading in ("## Mean rank", "## AULC per data set", "## Win / tie / loss"):
        assert heading in report
    # margin and its learned copy tie on every data set: 0 wins, 3 ties, 0 losses
    assert "0/3/0" in report
    for png in ("learning_curves.png", "mean_ranks.png"):
        data = (run_dir / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def wandb_records(path: Path):
    """Records of a .wandb file: LevelDB-style log blocks of protobuf `Record`s."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, last
            record = pb.Record()
            record.ParseFromString(pending + chunk)
            records.append(record)
            pending = b""
        elif kind in (2, 3):  # first, middle
            pending += chunk
    return records


def test_wandb_offline_run_holds_curves_summary_table_and_plots(run_dir, results):
    (run_file,) = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    records = wandb_records(Path(run_file))
    history = {}
    config = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            # nested values (tables, images) are flattened into "key/field"
            row = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item
            }
            history[row["_step"]] = row
        if record.WhichOneof("record_type") == "run":
            config = {i.key: json.loads(i.value_json) for i in record.run.config.update}
    assert config["budget"] == BUDGET and config["seeds"] == list(range(SEEDS))
    mean = results.groupby(["dataset", "strategy", "step"])["test_accuracy"].mean()
    for (dataset, strategy), curve in mean.groupby(level=[0, 1]):
        key = f"eval/{dataset}/{strategy}/test_accuracy"
        logged = [history[step][key] for step in range(BUDGET + 1)]
        np.testing.assert_allclose(logged, curve.to_numpy(), rtol=1e-9)
    (table_row,) = [r for r in history.values() if "eval/summary/_type" in r]
    assert table_row["eval/summary/_type"] == "table-file"
    table_file = Path(run_file).parent / "files" / table_row["eval/summary/path"]
    table = json.loads(table_file.read_text())
    assert table["columns"] == list(metrics.SUMMARY_COLUMNS)
    summary = pd.read_csv(run_dir / "summary.csv")
    assert [row[:2] for row in table["data"]] == summary[["dataset", "strategy"]].values.tolist()
    np.testing.assert_allclose([row[2] for row in table["data"]], summary["aulc_mean"])
    (image_row,) = [r for r in history.values() if "eval/plots/learning_curves/_type" in r]
    assert image_row["eval/plots/learning_curves/_type"] == "image-file"


def wandb_run_of(run_file: Path):
    """(run record, config, history rows by step, artifact records) of an offline run file."""
    run, config, history, artifacts = None, {}, {}, []
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config = {i.key: json.loads(i.value_json) for i in record.run.config.update}
        elif kind == "history":
            row = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item
            }
            history[row["_step"]] = row
        elif kind == "artifact":
            artifacts.append(record.artifact)
    return run, config, history, artifacts


def test_wandb_evaluation_run_is_grouped_tagged_with_win_tie_loss_and_an_artifact(run_dir, results):
    import base64
    import hashlib

    (run_file,) = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    run, config, history, artifacts = wandb_run_of(Path(run_file))
    assert run.run_group == GROUP and config["wandb_group"] == GROUP
    assert run.job_type == "evaluate"
    assert list(run.tags) == ["suite:data", "learner:logreg"]

    (row,) = [r for r in history.values() if "eval/win_tie_loss/_type" in r]
    assert row["eval/win_tie_loss/_type"] == "table-file"
    table_file = Path(run_file).parent / "files" / row["eval/win_tie_loss/path"]
    table = json.loads(table_file.read_text())
    expected = metrics.win_tie_loss(results)
    assert table["columns"] == ["strategy", "opponent", "wins", "ties", "losses"]
    assert table["data"] == expected.values.tolist()
    cells = {(r[0], r[1]): r[2:] for r in table["data"]}
    assert cells["learned", "margin"] == [0, 3, 0]  # margin's copy ties it on all 3 data sets
    assert len(table["data"]) == 3 * 2  # every ordered pair of the 3 strategies

    # (tables are logged as artifacts of type run_table too)
    (artifact,) = [a for a in artifacts if a.type == "evaluation"]
    assert artifact.name == f"evaluation-{run.run_id}"
    contents = {entry.path: entry for entry in artifact.manifest.contents}
    assert sorted(contents) == ["report.md", "results.csv", "summary.csv"]
    for name, entry in contents.items():
        data = (run_dir / name).read_bytes()
        assert entry.size == len(data)
        assert entry.digest == base64.b64encode(hashlib.md5(data).digest()).decode()


def test_same_seed_same_results_bit_for_bit_in_chunks(csv_files, results):
    from metaal.data import load_task

    tasks = [load_task(f, "label") for f in csv_files]
    # 60 episodes in chunks of 25 (the last padded): same numbers as one call of 60
    again = evaluate.evaluate(
        tasks,
        ["margin"],
        seeds=SEEDS,
        budget=BUDGET,
        n_initial=INIT,
        out_dir=None,
        progress=False,
        max_envs=25,
    )
    before = results[results["strategy"] == "margin"].reset_index(drop=True)
    # results.csv keeps float32 precision (accuracies are float32 on device)
    np.testing.assert_array_equal(
        again["test_accuracy"].astype(np.float32), before["test_accuracy"].astype(np.float32)
    )


# --- bad input: clear errors before anything is compiled --------------------------------


def run_main(argv, capsys):
    code = evaluate.main(parse(argv))
    return code, capsys.readouterr().err


def test_budget_larger_than_pool(csv_files, capsys):
    code, err = run_main(["--data", csv_files[0], "--target", "label", "--budget", "500"], capsys)
    assert code == 2
    assert "iris.csv" in err and "lower the budget to at most 101" in err


def test_unknown_strategy_lists_known_ones(csv_files, capsys):
    argv = ["--data", csv_files[0], "--target", "label", "--strategies", "margin,magic"]
    code, err = run_main(argv, capsys)
    assert code == 2 and "unknown strategy 'magic'" in err and "coreset" in err


def test_unreadable_file_and_missing_target(csv_files, tmp_path, capsys):
    code, err = run_main(["--data", str(tmp_path / "nope.csv"), "--target", "y"], capsys)
    assert code == 2 and "nope.csv" in err
    code, err = run_main(["--data", csv_files[0]], capsys)
    assert code == 2 and "--target" in err
    code, err = run_main(["--data", csv_files[0], "--target", "klass"], capsys)
    assert code == 2 and "'klass' not found" in err
    code, err = run_main([], capsys)
    assert code == 2 and "--suite" in err
    code, err = run_main(["--suite", "no_such_suite"], capsys)
    assert code == 2 and "unknown suite" in err


def test_a_shortlist_needs_a_policy_and_a_non_negative_size(csv_files, capsys):
    argv = ["--data", csv_files[0], "--target", "label", "--shortlist", "16"]
    code, err = run_main(argv, capsys)
    assert code == 2 and "--shortlist restricts a learned policy; add --policy" in err
    code, err = run_main([*argv[:-1], "-1", "--policy", "default"], capsys)
    assert code == 2 and "shortlist must be >= 0" in err


# --- tracking: W&B failures never stop an evaluation -------------------------------------


def test_tracking_falls_back_to_a_no_op_run(monkeypatch, tmp_path):
    import sys

    import wandb

    from metaal import tracking

    assert not tracking.init_run("p", "n", {}, mode="disabled").enabled

    def unreachable(**kwargs):
        raise wandb.errors.CommError("network unreachable")

    monkeypatch.setattr(wandb, "init", unreachable)
    with pytest.warns(UserWarning, match="could not start a run in online mode.*unreachable"):
        run = tracking.init_run("p", "n", {"a": 1}, mode="online", dir=tmp_path)
    assert not run.enabled
    run.log({"x": 1.0}, step=0)  # no-ops, no errors
    run.log_table("t", pd.DataFrame({"a": [1]}))
    run.finish()

    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    with pytest.warns(UserWarning, match="import of wandb"):
        assert not tracking.init_run("p", "n", {}, mode="offline").enabled
    with pytest.raises(ValueError, match="unknown W&B mode 'cloud'"):
        tracking.init_run("p", "n", {}, mode="cloud")


def test_tracking_survives_a_failing_log():
    from metaal import tracking

    class Broken:
        def log(self, *args, **kwargs):
            raise OSError("disk full")

    run = tracking.Run(Broken())
    with pytest.warns(UserWarning, match="failed to log.*disk full"):
        run.log({"x": 1.0})
    assert not run.enabled
    run.log({"x": 2.0})  # silently off from now on


def test_tracking_ids_and_artifacts_never_stop_a_run(tmp_path):
    from metaal import tracking

    off = tracking.init_run("p", "n", {}, mode="disabled", group="g", job_type="train")
    assert off.id is None
    off.log_artifact("a", "policy", [tmp_path / "missing"])  # a no-op run: nothing happens
    run = tracking.init_run(
        "p", "n", {}, mode="offline", dir=tmp_path, group="g", job_type="evaluate", tags=["t"]
    )
    assert run.enabled and run.id
    with pytest.warns(UserWarning, match="artifact 'results' not logged: no file .*missing.csv"):
        run.log_artifact("results", "evaluation", [tmp_path / "missing.csv"])
    assert run.enabled  # the run goes on
    other = tracking.init_run("p", "m", {}, mode="offline", dir=tmp_path)
    assert other.id != run.id  # a run of its own, not the one still open
    other.finish()
    run.finish()

    class Broken:
        id = "abc"

        def log_artifact(self, *args, **kwargs):
            raise OSError("disk full")

    (tmp_path / "r.csv").write_text("a\n1\n")
    broken = tracking.Run(Broken())
    assert broken.id == "abc"
    with pytest.warns(UserWarning, match="failed to log an artifact.*disk full"):
        broken.log_artifact("results", "evaluation", [tmp_path / "r.csv"])
    assert not broken.enabled and broken.id is None
    assert tracking.artifact_name("policy-synthetic:2/x y") == "policy-synthetic-2-x-y"


def test_run_name_follows_cleanrl():
    from metaal import tracking

    assert (
        tracking.run_name("heldout", "eval", 0, when=1700000000.5) == "heldout__eval__0__1700000000"
    )


# --- merging evaluations; batch rounds in the report ---------------------------------------


@pytest.fixture(scope="module")
def batch_runs(csv_files, tmp_path_factory):
    """Two evaluations of the same runs (rounds of 2, budget 12), one strategy each."""
    root = tmp_path_factory.mktemp("merge")
    argv = ["--data", csv_files[0], "--target", "label", "--seeds", "3", "--budget", "12"]
    argv += ["--query-batch", "2", "--wandb-mode", "disabled"]
    for name in ("margin", "random"):
        assert evaluate.main(parse(argv + ["--strategies", name, "--out", str(root / name)])) == 0
    return root, argv


def test_merged_evaluation_equals_the_joint_one(batch_runs, capsys):
    """Merging two single-strategy evaluations gives the joint evaluation's results and
    report, including the early / late rounds table."""
    root, argv = batch_runs
    merged = ["--merge", str(root / "margin"), "--merge", str(root / "random")]
    assert evaluate.main(parse(merged + ["--out", str(root / "merged")])) == 0
    joint = argv + ["--strategies", "margin,random", "--out", str(root / "joint")]
    assert evaluate.main(parse(joint)) == 0
    key = ["strategy", "seed", "step"]
    a = pd.read_csv(root / "merged" / "results.csv").sort_values(key).reset_index(drop=True)
    b = pd.read_csv(root / "joint" / "results.csv").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    report = (root / "merged" / "report.md").read_text()
    assert "## Early against late rounds (rounds of 2)" in report
    assert "first 3 rounds (steps 0..6)" in report and "last 3 rounds (steps 6..12)" in report
    assert (
        report.split("## Mean rank")[1]
        == (root / "joint" / "report.md").read_text().split("## Mean rank")[1]
    )
    capsys.readouterr()


def test_merge_refuses_other_runs_and_a_strategy_twice(batch_runs, csv_files, capsys):
    root, argv = batch_runs
    other = root / "other_seeds"
    cfg = argv + ["--seeds", "2", "--strategies", "entropy", "--out", str(other)]
    assert evaluate.main(parse(cfg)) == 0
    cases = [
        ([root / "margin", other], "its seeds ([0, 1]) differs"),
        ([root / "margin", root / "margin"], "strategy 'margin' is in both"),
        ([root / "margin", root / "nosuch"], "not a finished evaluation"),
        ([root / "margin"], "at least two evaluation folders"),
    ]
    for folders, fragment in cases:
        code = evaluate.main(
            parse([a for f in folders for a in ("--merge", str(f))] + ["--out", str(root / "x")])
        )
        assert code == 2 and fragment in capsys.readouterr().err, fragment
    assert not (root / "x").exists()  # refused before writing anything


def test_round_windows_cover_the_first_and_last_rounds():
    from metaal.metrics import round_windows

    assert round_windows(200, 10) == {
        "first 3 rounds": (0, 30),
        "last 3 rounds": (170, 200),
    }
    assert round_windows(25, 4)["last 3 rounds"] == (16, 25)  # the short last round counts
    with pytest.raises(ValueError, match="fewer than the 6"):
        round_windows(10, 2 * 1 + 1)


def test_first_seed_runs_fresh_splits_the_api_reproduces(csv_files, tmp_path):
    from metaal.data import load_task

    argv = ["--data", csv_files[0], "--target", "label", "--strategies", "margin"]
    argv += ["--seeds", "2", "--first-seed", "7", "--budget", "5", "--n-initial", "5"]
    argv += ["--out", str(tmp_path / "later"), "--wandb-mode", "disabled"]
    assert evaluate.main(parse(argv)) == 0
    cli = pd.read_csv(tmp_path / "later" / "results.csv")
    assert sorted(set(cli["seed"])) == [7, 8]
    task = [load_task(csv_files[0], "label")]
    kwargs = dict(budget=5, n_initial=5, out_dir=None, progress=False)
    api = evaluate.evaluate(task, ["margin"], seeds=[7, 8], **kwargs)
    np.testing.assert_array_equal(
        cli["test_accuracy"].astype(np.float32), api["test_accuracy"].astype(np.float32)
    )
    first = evaluate.evaluate(task, ["margin"], seeds=2, **kwargs)  # seeds 0, 1: other splits
    assert (first["test_accuracy"].to_numpy() != api["test_accuracy"].to_numpy()).any()
    code = evaluate.main(parse(argv[:-4] + ["--first-seed", "-1"]))
    assert code != 0
