"""Issue 12: output folders (checks, locks, atomic writes), what `metaal train` says, readable
outputs (plots, query columns, --help defaults, repr), and the README's call across processes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from metaal import atomic
from metaal.experiments import cli, evaluate, outputs, report
from metaal.experiments import train as train_mod
from metaal.strategies.learned import LearnedStrategy

ROOT = Path(__file__).resolve().parents[1]


# --- claim: checked, locked, cleaned up ----------------------------------------------------


def test_claim_locks_the_folder_for_the_run_and_removes_the_lock_after(tmp_path):
    out = tmp_path / "a" / "b"
    with outputs.claim(out):
        assert (out / outputs.LOCK_FILE).read_text() == str(os.getpid())
        with pytest.raises(outputs.OutputError, match=f"another metaal run \\(pid {os.getpid()}"):
            with outputs.claim(out):
                pass
        (out / "results.csv").write_text("x\n")
    assert not (out / outputs.LOCK_FILE).exists()
    with pytest.raises(outputs.OutputError, match="already holds results \\(results.csv\\)"):
        with outputs.claim(out, holds=("results.csv",)):
            pass
    with outputs.claim(out, holds=("results.csv",), overwrite=True):
        pass


def test_a_failed_run_removes_the_folders_it_created_and_keeps_the_others(tmp_path):
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with outputs.claim(tmp_path / "kept" / "new" / "deeper"):
            raise RuntimeError("bad input found after the claim")
    assert list(tmp_path.iterdir()) == [tmp_path / "kept"]
    assert not any((tmp_path / "kept").iterdir())


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    (tmp_path / outputs.LOCK_FILE).write_text(dead.stdout.strip())
    with outputs.claim(tmp_path):
        assert (tmp_path / outputs.LOCK_FILE).read_text() == str(os.getpid())
    err = capsys.readouterr().err
    assert f"taking over the lock of pid {dead.stdout.strip()}, which no longer runs" in err


def test_an_atomic_write_that_fails_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = atomic.write_text(tmp_path / "results.csv", "complete\n")
    with pytest.raises(ZeroDivisionError):
        with atomic.replacing(path) as tmp:
            tmp.write_text("half")
            raise ZeroDivisionError
    assert path.read_text() == "complete\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]
    atomic.append_line(path, '{"a": 1}')
    assert path.read_text().splitlines() == ["complete", '{"a": 1}']


# --- metaal evaluate: a fresh folder per run, config.json, --overwrite -------------------


def parse_evaluate(argv):
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    return parser.parse_args(argv)


def test_evaluate_reruns_never_replace_earlier_results(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["--suite", "sklearn/iris", "--strategies", "random", "--seeds", "1", "--budget", "3"]
    argv += ["--wandb-mode", "disabled"]
    assert evaluate.main(parse_evaluate(argv)) == 0
    assert evaluate.main(parse_evaluate(argv)) == 0
    folders = sorted((tmp_path / "runs" / "evaluate").iterdir())
    assert len(folders) == 2 and all(f.name.startswith("sklearn-iris__") for f in folders)
    printed = capsys.readouterr().out
    for folder in folders:
        assert f"results in {folder.relative_to(tmp_path)}" in printed
        config = json.loads((folder / "config.json").read_text())
        assert config["strategies"] == ["random"] and config["budget"] == 3
        assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []
    first = folders[0]
    old = (first / "results.csv").read_bytes()
    assert evaluate.main(parse_evaluate(argv + ["--out", str(first)])) == 2
    assert "already holds results" in capsys.readouterr().err
    assert (first / "results.csv").read_bytes() == old
    assert evaluate.main(parse_evaluate(argv + ["--out", str(first), "--overwrite"])) == 0


# --- metaal train: what it says -------------------------------------------------------


def parse_train(*argv):
    parser = argparse.ArgumentParser()
    train_mod.add_arguments(parser, argv)
    return parser.parse_args(argv)


TINY = ("--preset", "tiny", "--agent", "ppo", "--wandb-mode", "disabled")


@pytest.mark.slow  # out of CI's 20 minutes; run with -m slow
def test_train_says_folder_phases_rounding_and_the_final_table(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    # tiny PPO: 16 env steps per update, 2 updates per chunk: 80 steps -> 3 chunks of 32
    assert train_mod.main(parse_train(*TINY, "--total-steps", "80", "--out", str(out))) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"run folder: {out}"
    assert printed[1] == "--total-steps 80 rounded up to 96: whole chunks of 32 env steps"
    for phase in ("loading data:", "compiling:", "training:", "evaluating the final policy",
                  "exporting the policy"):  # fmt: skip
        assert any(line.startswith(phase) for line in printed), phase
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    table = printed[printed.index(next(x for x in printed if x.startswith("final evaluation"))) :]
    assert table[0] == "final evaluation at env step 96 (AULC, higher is better):"
    for line, name in zip(table[1:4], train_mod.EVAL_STRATEGIES, strict=True):
        assert line.split() == [name, f"{logged[-1][f'eval/{name}/aulc']:.4f}"]
    assert printed[-1] == f"policy written to {out / 'policy'}"

    # --resume on the finished run: says so, compiles nothing, changes nothing
    def no_compile(*args, **kwargs):
        raise AssertionError("a finished run was compiled again")

    monkeypatch.setattr(train_mod, "compiled", no_compile)
    policy = (out / "policy").read_bytes()
    assert train_mod.main(parse_train("--resume", str(out))) == 0
    said = capsys.readouterr().out
    assert said.strip() == (
        f"{out}: this run is finished already; its policy is {out / 'policy'}. Nothing to resume"
    )
    assert (out / "policy").read_bytes() == policy


@pytest.mark.slow  # out of CI's 20 minutes; run with -m slow
def test_a_resume_after_an_interrupted_final_evaluation_runs_it_again_once(tmp_path, monkeypatch):
    # the previous test's settings: its compiled functions are reused
    settings = train_mod.settings_from_args(parse_train(*TINY, "--total-steps", "80"))
    quiet = {"wandb_mode": "disabled", "progress": False}
    full = train_mod.train(settings, tmp_path / "full", **quiet)
    real = evaluate.run_entries
    calls = []

    def ctrl_c_in_the_final_evaluation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # evaluates after each of its 3 chunks: this is the final one
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "run_entries", ctrl_c_in_the_final_evaluation)
    killed = tmp_path / "killed"
    with pytest.raises(train_mod.TrainingInterrupted) as caught:
        train_mod.train(settings, killed, **quiet)
    assert str(caught.value) == (
        f"interrupted at update 4 (env step 64); resume with `metaal train --resume {killed}`"
    )
    assert not (killed / "policy").exists() and not (killed / outputs.LOCK_FILE).exists()
    monkeypatch.setattr(evaluate, "run_entries", real)
    resumed = train_mod.train(None, killed, resume=True, **quiet)

    def lines(folder):
        rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "charts/SPS"} for r in rows]  # timing

    assert lines(killed) == lines(tmp_path / "full")
    assert [r["env_steps"] for r in lines(killed)] == [32, 64, 96]  # the final one just once
    a, b = LearnedStrategy.load(full), LearnedStrategy.load(resumed)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --- outputs people read ----------------------------------------------------------------


def fake_results(n_strategies, n_datasets=1, seeds=3, budget=10):
    rows = []
    for d in range(n_datasets):
        for s in range(n_strategies):
            for seed in range(seeds):
                for step in range(budget + 1):
                    acc = 0.5 + 0.01 * step + 0.001 * s + 0.002 * seed
                    rows.append((f"data{d}", f"strategy_number_{s}", seed, step, 5 + step, acc))
    return pd.DataFrame(rows, columns=list(report.metrics.RESULT_COLUMNS))


def test_the_learning_curve_plot_shows_every_strategy_a_band_label_and_a_title(tmp_path):
    from PIL import Image

    fig = report.learning_curves_figure(fake_results(13))
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [f"strategy_number_{s}" for s in range(13)]
    assert legend.get_title().get_text() == "band: ± 1 standard error of the mean over seeds"
    assert fig._suptitle.get_text() == (
        "Test accuracy over 10 queries after 5 initial labels, mean of 3 paired seeds"
    )
    sizes = {}
    for n in (3, 13):
        path = report.plot_learning_curves(fake_results(n), tmp_path / f"curves{n}.png")
        sizes[n] = Image.open(path).size
    assert sizes[13][1] > sizes[3][1] and sizes[13][0] >= 600  # grows with the strategies
    # the legend lies whole inside the saved image ("tight" bounding box)
    renderer = fig.canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    tight = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)
    assert tight.x1 >= box.x1 - 1 and tight.y0 <= box.y0 + 1


def test_query_prints_the_csv_columns_in_the_csv_order(tmp_path, capsys):
    from test_query import _messy_csv

    data = _messy_csv(tmp_path / "pool.csv")
    out = tmp_path / "picks.csv"
    argv = ["query", "--policy", "margin", "--data", str(data), "--target", "label"]
    assert cli.main(argv + ["--batch-size", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "need not decrease" in printed[0]
    picks = pd.read_csv(out)
    assert printed[1].split() == list(picks.columns) == ["order", "row", "score"]
    for line, (_, pick) in zip(printed[2:6], picks.iterrows(), strict=True):
        assert line.split() == [str(int(pick.order)), str(int(pick.row)), f"{pick.score:.4f}"]


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_help_shows_every_options_default(command):
    parser = cli.build_parser([command, "--help"])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    child = sub.choices[command]
    formatter = child._get_formatter()
    missing = [
        a.option_strings[0]
        for a in child._actions
        if a.option_strings and a.dest != "help"
        if "(default" not in formatter._get_help_string(a)
    ]
    assert missing == []
    text = child.format_help()
    assert text.count("(default") >= len(child._actions) - 1
    assert "(default: None)" not in text and "(default: none) (default" not in text


def test_a_policy_prints_in_one_short_line():
    text = repr(LearnedStrategy.load("default"))
    assert text.startswith("LearnedStrategy(scorer='ensemble_scorer', members=5, shortlist=16")
    assert "features=" in text and "Array" not in text and len(text) < 200


def test_the_readme_call_gives_the_same_picks_in_two_processes():
    code = textwrap.dedent(
        """
        import numpy as np
        from metaal.strategies.learned import LearnedStrategy
        rng = np.random.default_rng(1)
        X = rng.normal(size=(200, 6))
        y = np.full(200, np.nan)
        y[:10] = np.arange(10) % 2
        print(LearnedStrategy.load("default").query(X, y, batch_size=10).tolist())
        """
    )
    picks = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ).stdout  # fmt: skip
        for _ in range(2)
    ]
    assert picks[0] == picks[1] and len(json.loads(picks[0])) == 10


def test_a_finished_train_folder_stands_for_its_policy_file(tmp_path):
    from metaal.policy_net import linear_params, linear_scorer

    policy = LearnedStrategy(
        linear_scorer({}),
        linear_params({"margin": -1.0}),
        {"scorer": "metaal.policy_net:linear_scorer"},
    )
    policy.save(tmp_path / "run" / "policy")
    loaded = LearnedStrategy.load(tmp_path / "run")
    assert loaded.config == policy.config
    assert repr(loaded).startswith("LearnedStrategy(scorer='linear_scorer', shortlist=0, features=")
