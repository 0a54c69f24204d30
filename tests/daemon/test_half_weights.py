"""CLIP weights stored in float16 (computed in float32), the id that says so, and the
GPU-library page-out: memory savings that must not change what the daemon answers."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from photodupd.models import backend, catalog
from tests.daemon.test_models import preprocess
from tests.daemon.tiny_clip import TinyClip, write_tiny_clip

#: Real photographs (scikit-image's test set): the embeddings that must stay put.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "moon", "page", "brick", "clock")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyClip:
    return write_tiny_clip(tmp_path_factory.mktemp("tiny"), seed=3)


def load(tiny: TinyClip, *, half: bool) -> backend.ClipModel:
    choice = catalog.resolve("clip", weights=tiny.weights, model_config=tiny.config)
    model = backend.load_model(choice, device="cpu", half_weights=half)
    assert isinstance(model, backend.ClipModel)
    return model


def photo_pixels(model: backend.ClipModel) -> np.ndarray:
    images = [Image.fromarray(getattr(skimage.data, name)()) for name in PHOTOS]
    return np.stack([preprocess(image, model.spec) for image in images])


def weight_bytes(model: backend.ClipModel) -> int:
    return sum(p.numel() * p.element_size() for p in model.net.parameters())


def test_half_weights_halve_the_matrices_and_keep_embeddings_of_real_photos(
    tiny: TinyClip,
) -> None:
    full, half = load(tiny, half=False), load(tiny, half=True)
    assert not full.half_weights and half.half_weights
    # Nearly every byte is in matrices: the model's weights take about half the memory.
    assert weight_bytes(half) < 0.55 * weight_bytes(full)
    pixels = photo_pixels(full)
    cosine = np.sum(full.embed(pixels) * half.embed(pixels), axis=1)
    assert cosine.shape == (len(PHOTOS),)
    assert np.all(cosine >= backend.HALF_WEIGHTS_MIN_COSINE), cosine
    np.testing.assert_allclose(np.linalg.norm(half.embed(pixels), axis=1), 1.0, atol=1e-5)


def test_the_id_says_how_the_weights_are_stored_so_caches_never_mix(tiny: TinyClip) -> None:
    full, half = load(tiny, half=False), load(tiny, half=True)
    assert half.id == full.id + catalog.HALF_WEIGHTS_SUFFIX
    assert catalog.base_id(half.id) == catalog.base_id(full.id) == full.id
    assert catalog.served_id(full.id, half_weights=True) == half.id
    # Clients asking for a family or a tag still recognise the model as theirs.
    assert half.id.startswith(catalog.base_id(half.id) + "/")


def test_one_half_weight_model_serves_several_threads_at_once(tiny: TinyClip) -> None:
    model = load(tiny, half=True)
    pixels = photo_pixels(model)
    expected = [model.embed(pixels[i : i + 3]) for i in range(0, len(pixels), 3)]
    results: dict[int, list[np.ndarray]] = {}
    start = threading.Barrier(3)

    def embed_all(worker: int) -> None:
        start.wait(timeout=10)
        results[worker] = [
            model.embed(pixels[i : i + 3]) for _ in range(5) for i in range(0, len(pixels), 3)
        ]

    threads = [threading.Thread(target=embed_all, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [0, 1, 2]
    for got in results.values():
        for index, vectors in enumerate(got):
            np.testing.assert_allclose(vectors, expected[index % len(expected)], atol=1e-6)


def test_storage_that_moves_embeddings_too_far_falls_back_to_float32(
    tiny: TinyClip, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(backend, "HALF_WEIGHTS_MIN_COSINE", 1.5)  # no model can pass this
    with caplog.at_level(logging.WARNING, logger="photodupd.models"):
        model = load(tiny, half=True)
    assert not model.half_weights
    assert not model.id.endswith(catalog.HALF_WEIGHTS_SUFFIX)
    assert "float32 weights instead" in caplog.text
    reference = load(tiny, half=False)
    pixels = photo_pixels(model)
    np.testing.assert_allclose(model.embed(pixels), reference.embed(pixels), atol=1e-6)


def test_the_builtin_model_ignores_half_weights() -> None:
    model = backend.load_model(catalog.resolve("builtin"), device="cpu", half_weights=True)
    assert model.id == catalog.BUILTIN_ID


def test_paging_out_gpu_libraries_changes_nothing_the_model_computes() -> None:
    model = backend.load_model(catalog.resolve("builtin"), device="cpu")
    pixels = preprocess(Image.fromarray(skimage.data.chelsea()), model.spec)[None]
    before = model.embed(pixels)
    advised = backend.page_out_gpu_libraries()
    maps = Path("/proc/self/maps")
    gpu_mapped = maps.exists() and re.search(r"/nvidia/|libtorch_cuda", maps.read_text())
    if gpu_mapped:
        assert advised > 0
    np.testing.assert_array_equal(model.embed(pixels), before)
