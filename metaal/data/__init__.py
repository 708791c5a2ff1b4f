"""Data for metaal: tasks, their splits, and where tasks come from.

- `task`: the `Task` type (an encoded data set), `encode_frame`, and
  `make_split` (stratified pool / validation / test, imputed and
  standardised with pool statistics only);
- `batch`: padding many splits into one fixed-shape `TaskBatch`;
- `loaders`: bundled real data sets by name (`load_dataset("keel/wine")`),
  from the optional extra `metaal[datasets]`;
- `synthetic`: generated tasks with tunable difficulty;
- `files`: users' own CSV / TSV / NPZ files and their checks;
- `corpora` and `fm`: real texts and images from installed packages,
  embedded by a pretrained encoder and cached (`fm/...` tasks);
- `suites`: named suites (`train`, `heldout`, `fm-train`, `fm-heldout`,
  `synthetic`, `train+synthetic`) and the check that held-out data never
  enters meta-training.
"""

from metaal.data.batch import TaskBatch, pad_split, stack_splits
from metaal.data.files import QueryData, load_file, load_labelled_and_unlabelled
from metaal.data.loaders import load_dataset
from metaal.data.suites import (
    ALL_HELDOUT,
    FM_HELDOUT,
    FM_TRAIN,
    HELDOUT,
    TRAIN,
    check_heldout_unseen,
    describe_suites,
    load_suite,
    load_task,
    suite_names,
    train_fold,
)
from metaal.data.synthetic import make_synthetic_task, synthetic_task
from metaal.data.task import DataError, Split, Task, encode_frame, make_split, split_sizes

__all__ = [
    "ALL_HELDOUT",
    "FM_HELDOUT",
    "FM_TRAIN",
    "HELDOUT",
    "TRAIN",
    "DataError",
    "QueryData",
    "Split",
    "Task",
    "TaskBatch",
    "check_heldout_unseen",
    "describe_suites",
    "encode_frame",
    "load_dataset",
    "load_file",
    "load_labelled_and_unlabelled",
    "load_suite",
    "load_task",
    "make_split",
    "make_synthetic_task",
    "pad_split",
    "split_sizes",
    "stack_splits",
    "suite_names",
    "synthetic_task",
    "train_fold",
]
