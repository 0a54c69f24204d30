"""The inference service end to end: real decoder pool, real built-in model, real threads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from photodupd import batcher, protocol, sockets
from photodupd.client import AsyncClient
from photodupd.config import DaemonConfig
from photodupd.inference import InferenceService
from photodupd.models import backend, catalog
from photodupd.protocol import ErrorCode, FeatureItem, ServiceError
from photodupd.server import Server
from tests import photos
from tests.daemon.test_models import FakeHub, fake_cached_file
from tests.daemon.tiny_clip import TINY_EMBED_DIM, write_tiny_clip

pytestmark = pytest.mark.timeout(120)

BASE = DaemonConfig(
    model="builtin", threads=2, decode_workers=2, batch_size=32, batch_wait_ms=4.0, idle_unload=0
)

Factory = Callable[..., Coroutine[Any, Any, InferenceService]]


@pytest.fixture(autouse=True)
def empty_hf_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No test here may see (or fill) the user's Hugging Face cache."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    return tmp_path / "hf-hub"


@pytest.fixture
async def make_service() -> AsyncIterator[Factory]:
    started: list[InferenceService] = []

    async def factory(**overrides: Any) -> InferenceService:
        service = InferenceService(BASE.with_overrides(**overrides))
        await service.start()
        started.append(service)
        return service

    yield factory
    for service in started:
        await service.close(5.0)


def jpeg_files(folder: Path, seeds: range, size: tuple[int, int] = (320, 240)) -> list[Path]:
    return [
        photos.write_jpeg(folder / f"photo-{seed}.jpg", photos.make_photo(seed, size))
        for seed in seeds
    ]


def vector(item: dict[str, Any], dim: int) -> np.ndarray:
    assert item["ok"], item
    assert len(item["embedding"]) == 4 * dim
    return np.frombuffer(item["embedding"], dtype="<f4")


async def wait_for_state(service: InferenceService, state: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while service.model_info()["state"] != state:
        assert time.monotonic() < deadline, f"state stayed {service.model_info()['state']}"
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- serving


async def test_features_by_path_and_by_bytes(make_service: Factory, tmp_path: Path) -> None:
    ready: list[str] = []
    service = await make_service()
    service.on_ready = lambda: ready.append("ready")
    info = await service.wait_ready()
    assert info["id"] == catalog.BUILTIN_ID and info["dim"] == 1280
    assert ready == ["ready"]
    [first, second] = jpeg_files(tmp_path, range(2), (400, 300))
    reply = await service.features(
        [FeatureItem(path=str(first)), FeatureItem(data=second.read_bytes())]
    )
    assert reply["model"] == {"id": catalog.BUILTIN_ID, "dim": 1280}
    for item in reply["items"]:
        assert np.isclose(np.linalg.norm(vector(item, 1280)), 1.0, atol=1e-4)
        assert (item["width"], item["height"], item["format"]) == (400, 300, "JPEG")
        assert isinstance(item["phash"], int) and 0 <= item["phash"] < 2**64
    # The same photo by path and by bytes gives the same embedding.
    again = await service.features([FeatureItem(data=first.read_bytes())])
    np.testing.assert_allclose(
        vector(again["items"][0], 1280), vector(reply["items"][0], 1280), atol=1e-5
    )
    status = service.status()
    assert status["state"] == "ready" and status["images_served"] == 3
    assert status["model"] == catalog.BUILTIN_ID


def keys_of(shape: Any) -> set[str]:
    """The keys a reply of this TypedDict always carries."""
    return set(shape.__required_keys__)


async def test_replies_have_the_protocol_shapes(
    make_service: Factory, isolated_dirs: Path, tmp_path: Path
) -> None:
    """Every op's result, as a client reads it off the socket, has exactly the keys of its
    shape in photodupd.protocol: the types the clients read are the wire's."""
    service = await make_service()
    await service.wait_ready()
    config = BASE.with_overrides(socket=isolated_dirs / "d.sock")
    listener = sockets.bind_listener(config.socket_path)
    server = Server(config, service)
    await server.start(listener.sock)
    [path] = jpeg_files(tmp_path, range(1))
    try:
        async with AsyncClient(config.socket_path) as client:
            welcome = client.welcome
            assert welcome is not None
            assert set(welcome) == keys_of(protocol.Welcome) | {"idle_timeout"}
            assert set(welcome["model"]) == keys_of(protocol.ActiveModel)
            assert set(await client.call(protocol.PING)) == keys_of(protocol.Pong)
            assert set(await client.status()) == keys_of(protocol.Status)
            features = await client.features([{"path": str(path)}, {"path": str(tmp_path)}])
            assert set(features) == keys_of(protocol.Features)
            assert set(features["model"]) == keys_of(protocol.ModelIdentity)
            assert set(features["timing"]) == keys_of(protocol.Timing)
            status = await client.status()
            assert {frozenset(minute) for minute in status["history"]} == {
                frozenset(keys_of(protocol.MinuteStats))
            }
            assert set(status["features_latency"]) == keys_of(protocol.Latency)
            probed = await client.call(protocol.PROBE, data=path.read_bytes())
            assert set(probed) == keys_of(protocol.Probed)
            assert probed["classes"] is not None
            assert {frozenset(c) for c in probed["classes"]} == {
                frozenset(keys_of(protocol.ClassScore))
            }
            done, failed = features["items"]
            # ``thumb`` is NotRequired (which 3.11 cannot see under postponed annotations):
            # only a request that opts in gets it, and only for its embedded items.
            assert set(done) == keys_of(protocol.ItemOk) - {"thumb"}
            asked = await client.features(
                [{"path": str(path)}, {"path": str(tmp_path)}], thumbs=True
            )
            assert set(asked["items"][0]) == keys_of(protocol.ItemOk)
            assert set(asked["items"][1]) == keys_of(protocol.ItemFailed)
            assert set(failed) == keys_of(protocol.ItemFailed)
            assert set(failed["error"]) == keys_of(protocol.ItemErrorBody)
            models = await client.call(protocol.MODELS)
            assert set(models) == keys_of(protocol.Models)
            assert {frozenset(row) for row in models["models"]} == {
                frozenset(keys_of(protocol.ModelRow))
            }
            loaded = await client.call(protocol.LOAD, model="builtin")
            assert set(loaded) == keys_of(protocol.ModelInfo)
            stopping = await client.call(protocol.SHUTDOWN)
            assert set(stopping) == keys_of(protocol.Stopping)
    finally:
        await server.shutdown(drain_timeout=5)
        listener.close()


async def test_a_resized_copy_is_closer_than_another_photo(
    make_service: Factory, tmp_path: Path
) -> None:
    service = await make_service()
    await service.wait_ready()
    original = photos.make_photo(21, (800, 600))
    items = [
        FeatureItem(data=photos.jpeg_bytes(original, quality=92)),
        FeatureItem(data=photos.encode(original.resize((320, 240)), "PNG")),
        FeatureItem(data=photos.jpeg_bytes(photos.make_photo(22, (800, 600)))),
    ]
    reply = await service.features(items)
    a, b, c = (vector(item, 1280) for item in reply["items"])
    assert float(a @ b) > float(a @ c)


async def test_bad_items_fail_alone(make_service: Factory, tmp_path: Path) -> None:
    service = await make_service()
    await service.wait_ready()
    [good] = jpeg_files(tmp_path, range(1))
    reply = await service.features(
        [
            FeatureItem(path=str(tmp_path / "missing.jpg")),
            FeatureItem(path=str(good)),
            FeatureItem(data=b"definitely not an image" * 10),
        ]
    )
    missing, ok, garbage = reply["items"]
    assert missing == {
        "ok": False,
        "error": {"code": "not_found", "message": missing["error"]["message"]},
    }
    assert garbage["ok"] is False and garbage["error"]["code"] == "not_an_image"
    vector(ok, 1280)
    assert service.status()["errors"] == 2


async def test_concurrent_requests_share_micro_batches(
    make_service: Factory, tmp_path: Path
) -> None:
    service = await make_service(batch_wait_ms=50.0)
    await service.wait_ready()
    files = jpeg_files(tmp_path, range(24), (160, 120))
    replies = await asyncio.gather(*(service.features([FeatureItem(path=str(p))]) for p in files))
    assert all(reply["items"][0]["ok"] for reply in replies)
    status = service.status()
    assert status["images_served"] == 24
    assert status["mean_batch"] > 1.0, status  # items of different requests shared forward passes
    assert status["batches"] < 24
    assert status["largest_batch"] <= 32
    assert status["in_flight_items"] == 0 and status["queue_depth"] == 0
    assert status["recent_images_per_s"] > 0


async def test_a_full_queue_answers_busy(make_service: Factory, tmp_path: Path) -> None:
    service = await make_service(max_queue=4)
    await service.wait_ready()
    files = jpeg_files(tmp_path, range(5))
    first = asyncio.ensure_future(service.features([FeatureItem(path=str(p)) for p in files[:4]]))
    await asyncio.sleep(0)  # the first request is admitted and holds all 4 slots
    with pytest.raises(ServiceError) as busy:
        await service.features([FeatureItem(path=str(files[4]))])
    assert busy.value.code == ErrorCode.BUSY
    assert all(item["ok"] for item in (await first)["items"])
    # Slots are given back: the same request now goes through.
    assert (await service.features([FeatureItem(path=str(files[4]))]))["items"][0]["ok"]


async def test_the_event_loop_answers_pings_while_a_batch_is_in_the_model(
    make_service: Factory,
    tmp_path: Path,
    isolated_dirs: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Decoding and the model run off the loop: while a forward pass is held inside the
    model, pings on the same connection are answered.  The pass is held by the test (an
    Event), not made slow by the machine, so the check runs everywhere and says the same."""
    in_model, release = threading.Event(), threading.Event()
    real_embed = backend.BuiltinModel.embed

    def held_embed(self: backend.BuiltinModel, pixels: np.ndarray) -> np.ndarray:
        in_model.set()
        # A loop that ran this pass itself could not answer the pings that release it: the
        # pass then goes on alone after a while, and every ping comes after it.
        release.wait(timeout=15)
        try:
            return real_embed(self, pixels)
        finally:
            in_model.clear()

    monkeypatch.setattr(backend.BuiltinModel, "embed", held_embed)
    service = await make_service()
    await service.wait_ready()
    config = BASE.with_overrides(socket=isolated_dirs / "d.sock")
    listener = sockets.bind_listener(config.socket_path)
    server = Server(config, service)
    await server.start(listener.sock)
    [path] = jpeg_files(tmp_path, range(1))
    answered_during_the_pass = 0
    try:
        async with AsyncClient(config.socket_path) as client:
            request = asyncio.ensure_future(client.features([{"path": str(path)}]))
            assert await asyncio.to_thread(in_model.wait, 60), "the batch never reached the model"
            for _ in range(5):
                assert (await client.request("ping"))["pong"] is True
                answered_during_the_pass += in_model.is_set() and not request.done()
            release.set()
            reply = await request
    finally:
        release.set()
        await server.shutdown(drain_timeout=5)
        listener.close()
    assert answered_during_the_pass == 5, "pings waited for the forward pass"
    assert reply["items"][0]["ok"] and service.status()["images_served"] == 1


async def test_memory_is_trimmed_once_after_a_burst_not_during_it(
    make_service: Factory, tmp_path: Path
) -> None:
    service = await make_service()
    await service.wait_ready()
    files = jpeg_files(tmp_path, range(5))

    async def burst(paths: list[Path]) -> int:
        """Serve ``paths``; returns the most trims seen while items were in flight."""
        request = asyncio.ensure_future(service.features([FeatureItem(path=str(p)) for p in paths]))
        seen = service.status()["memory_trims"]
        while not request.done():
            seen = max(seen, service.status()["memory_trims"])
            await asyncio.sleep(0.01)
        assert all(item["ok"] for item in (await request)["items"])
        return seen

    async def trims_become(count: int) -> None:
        deadline = time.monotonic() + batcher.TRIM_AFTER + 30.0
        while service.status()["memory_trims"] != count:
            assert time.monotonic() < deadline, f"trims stayed {service.status()['memory_trims']}"
            await asyncio.sleep(0.02)

    assert await burst(files[:3]) == 0  # never while work is in flight
    await trims_become(1)
    await asyncio.sleep(batcher.TRIM_AFTER * 1.5)  # idle, nothing new served: no second trim
    assert service.status()["memory_trims"] == 1
    assert await burst(files[3:]) == 1
    await trims_become(2)


# --------------------------------------------------------------------------- model lifecycle


async def test_idle_unload_then_reload_on_the_next_request(
    make_service: Factory, tmp_path: Path
) -> None:
    service = await make_service(idle_unload=0.5)
    await service.wait_ready()
    [path] = jpeg_files(tmp_path, range(1))
    before = await service.features([FeatureItem(path=str(path))])
    await wait_for_state(service, "unloaded")
    status = service.status()
    assert status["unloads"] == 1 and status["model"] == catalog.BUILTIN_ID
    after = await service.features([FeatureItem(path=str(path))])
    assert service.status()["loads"] == 2
    assert after["model"] == before["model"]
    np.testing.assert_allclose(
        vector(after["items"][0], 1280), vector(before["items"][0], 1280), atol=1e-5
    )
    assert service.model_info()["state"] == "ready"


async def test_auto_with_no_clip_weights_serves_builtin_and_says_why(
    make_service: Factory, empty_hf_cache: Path
) -> None:
    service = await make_service(model="auto")
    info = await service.wait_ready()
    assert info["id"] == catalog.BUILTIN_ID
    status = service.status()
    assert "not in the local cache" in status["why"] and str(empty_hf_cache) in status["why"]
    rows = {row["name"]: row for row in service.models()}
    assert rows["builtin"]["active"] is True
    clip = rows["clip:ViT-B-32/laion2b_s34b_b79k"]
    assert clip["available"] is False and clip["active"] is False
    # Listed with the id its replies would carry (weights stored in float16 by default).
    assert clip["id"] == "clip:ViT-B-32/laion2b_s34b_b79k" + catalog.HALF_WEIGHTS_SUFFIX


async def test_auto_falls_back_to_builtin_when_cached_clip_weights_are_broken(
    make_service: Factory, empty_hf_cache: Path
) -> None:
    fake_cached_file(
        empty_hf_cache, catalog.DEFAULT_CLIP, catalog.HF_SAFE_WEIGHTS_NAME, b"not a checkpoint"
    )
    service = await make_service(model="auto")
    info = await service.wait_ready()
    assert info["id"] == catalog.BUILTIN_ID
    assert "failed to load" in info["why"] and "built-in" in info["why"]
    assert service.status()["last_error"]


async def test_an_unavailable_model_fails_with_a_clear_reason(make_service: Factory) -> None:
    service = await make_service(model="clip:ViT-B-32/laion2b_s34b_b79k")
    with pytest.raises(ServiceError) as failed:
        await service.wait_ready()
    assert failed.value.code == ErrorCode.MODEL_UNAVAILABLE
    assert "models pull" in failed.value.message
    status = service.status()
    assert status["state"] == "failed" and "models pull" in status["last_error"]
    with pytest.raises(ServiceError) as refused:
        await service.features([FeatureItem(data=b"x")])
    assert refused.value.code == ErrorCode.MODEL_UNAVAILABLE


async def test_switching_models_changes_the_id_in_replies(
    make_service: Factory, tmp_path: Path
) -> None:
    tiny = write_tiny_clip(tmp_path / "tiny")
    service = await make_service(model_config=tiny.config)
    await service.wait_ready()
    [path] = jpeg_files(tmp_path, range(1))
    info = await service.load("clip", str(tiny.weights))
    file_id = f"clip:{tiny.name}/file-{catalog.weights_fingerprint(tiny.weights)}"
    # CLIP weights are stored in float16 by default, and the id says so.
    assert info["id"] == file_id + catalog.HALF_WEIGHTS_SUFFIX
    assert info["dim"] == TINY_EMBED_DIM
    reply = await service.features([FeatureItem(path=str(path))])
    assert reply["model"] == {"id": info["id"], "dim": TINY_EMBED_DIM}
    vector(reply["items"][0], TINY_EMBED_DIM)
    assert any(row["active"] and row["id"] == info["id"] for row in service.models())
    # A failed switch keeps the model that works.
    with pytest.raises(ServiceError) as failed:
        await service.load("clip:ViT-B-16/openai")
    assert failed.value.code == ErrorCode.MODEL_UNAVAILABLE
    assert service.model_info()["id"] == info["id"] and service.model_info()["state"] == "ready"
    back = await service.load("builtin")
    assert back["id"] == catalog.BUILTIN_ID
    assert (await service.features([FeatureItem(path=str(path))]))["model"]["dim"] == 1280


async def test_loading_the_active_model_again_is_free(make_service: Factory) -> None:
    service = await make_service(model="auto")
    await service.wait_ready()
    assert service.status()["loads"] == 1
    info = await service.load("builtin")
    assert info["id"] == catalog.BUILTIN_ID and info["why"] == "the built-in model was requested"
    assert service.status()["loads"] == 1


async def test_clip_weight_storage_is_in_the_id_and_reloading_the_same_model_is_free(
    make_service: Factory, tmp_path: Path
) -> None:
    tiny = write_tiny_clip(tmp_path / "tiny")
    [path] = jpeg_files(tmp_path, range(1))
    options = {"model": "clip", "weights": tiny.weights, "model_config": tiny.config}
    half = await make_service(**options)
    info = await half.wait_ready()
    assert info["id"].endswith(catalog.HALF_WEIGHTS_SUFFIX)
    assert (await half.load("clip", str(tiny.weights)))["id"] == info["id"]
    assert half.status()["loads"] == 1
    assert [row["id"] for row in half.models() if row["active"]] == [info["id"]]
    full = await make_service(**options, clip_weights="float32")
    full_info = await full.wait_ready()
    assert full_info["id"] == catalog.base_id(info["id"])
    item = [FeatureItem(path=str(path))]
    half_reply, full_reply = await half.features(item), await full.features(item)
    assert half_reply["model"]["id"] != full_reply["model"]["id"]
    closeness = float(
        np.dot(
            vector(half_reply["items"][0], TINY_EMBED_DIM),
            vector(full_reply["items"][0], TINY_EMBED_DIM),
        )
    )
    assert closeness >= 0.9999


async def test_a_switch_waits_for_items_in_flight(make_service: Factory, tmp_path: Path) -> None:
    tiny = write_tiny_clip(tmp_path / "tiny")
    service = await make_service(model_config=tiny.config)
    await service.wait_ready()
    files = jpeg_files(tmp_path, range(6))
    in_flight = asyncio.ensure_future(service.features([FeatureItem(path=str(p)) for p in files]))
    await asyncio.sleep(0)
    switched = await service.load("clip", str(tiny.weights))
    reply = await in_flight
    # Every item of the earlier request was embedded by the model it started with.
    assert reply["model"]["id"] == catalog.BUILTIN_ID
    assert all(len(item["embedding"]) == 4 * 1280 for item in reply["items"])
    assert switched["dim"] == TINY_EMBED_DIM


async def test_pull_offline_is_a_download_failure(
    make_service: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    service = await make_service()
    with pytest.raises(ServiceError) as failed:
        await service.pull("clip", lambda done, total: None)
    assert failed.value.code == ErrorCode.DOWNLOAD_FAILED
    assert "offline" in failed.value.message


async def test_pull_reports_progress_and_leaves_the_running_model_alone(
    make_service: Factory, monkeypatch: pytest.MonkeyPatch, empty_hf_cache: Path
) -> None:
    hub = FakeHub({})
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        payload = b"w" * 100_000
        hub.files[
            f"/{catalog.DEFAULT_CLIP.hf_repo}/resolve/main/{catalog.HF_SAFE_WEIGHTS_NAME}"
        ] = payload
        service = await make_service(model="auto")
        await service.wait_ready()
        seen: list[tuple[int, int]] = []
        result = await service.pull("clip", lambda done, total: seen.append((done, total)))
        assert result["model"] == catalog.DEFAULT_CLIP.label and result["bytes"] == len(payload)
        assert Path(result["path"]).read_bytes() == payload
        assert seen[-1] == (len(payload), len(payload))
        # Weights arrived, but the id of a running daemon changes only on request.
        assert service.model_info()["id"] == catalog.BUILTIN_ID
        rows = {row["name"]: row for row in service.models()}
        assert rows[catalog.DEFAULT_CLIP.label]["available"] is True
    finally:
        hub.shutdown()
        hub.server_close()


# --------------------------------------------------------------------------- shutdown


async def test_close_fails_unfinished_work_and_refuses_new(
    make_service: Factory, tmp_path: Path
) -> None:
    service = await make_service()
    await service.wait_ready()
    files = jpeg_files(tmp_path, range(8), (640, 480))
    pending = asyncio.ensure_future(service.features([FeatureItem(path=str(p)) for p in files]))
    await asyncio.sleep(0)
    await service.close(0.0)
    with pytest.raises(ServiceError) as stopped:
        await pending
    assert stopped.value.code == ErrorCode.SHUTTING_DOWN
    with pytest.raises(ServiceError) as refused:
        await service.features([FeatureItem(path=str(files[0]))])
    assert refused.value.code == ErrorCode.SHUTTING_DOWN


async def test_close_lets_in_flight_work_finish(make_service: Factory, tmp_path: Path) -> None:
    service = await make_service()
    await service.wait_ready()
    files = jpeg_files(tmp_path, range(4))
    pending = asyncio.ensure_future(service.features([FeatureItem(path=str(p)) for p in files]))
    await asyncio.sleep(0)
    await service.close(30.0)
    assert all(item["ok"] for item in (await pending)["items"])


async def test_probe_gives_the_built_in_models_classes_and_none_for_clip(
    make_service: Factory, tmp_path: Path
) -> None:
    """The probe op decodes like features and asks the classifier head: the doctor's cat is a
    cat for the built-in model; CLIP's image tower has no head, so no classes; a file that
    is no image is that image's error, for the whole (one-image) request."""
    from photodupd import probe

    tiny = write_tiny_clip(tmp_path / "tiny")
    service = await make_service(model_config=tiny.config)
    await service.wait_ready()
    probed = await service.probe(FeatureItem(data=probe.probe_photo()))
    assert probed["model"] == {"id": catalog.BUILTIN_ID, "dim": 1280}
    assert probed["classes"] is not None and len(probed["classes"]) == batcher.TOP_CLASSES
    assert probed["classes"][0]["index"] in range(281, 286)  # ImageNet's cats
    scores = [c["score"] for c in probed["classes"]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-6
    with pytest.raises(ServiceError) as refused:
        await service.probe(FeatureItem(data=b"not an image at all"))
    assert refused.value.code == ErrorCode.NOT_AN_IMAGE

    info = await service.load("clip", str(tiny.weights))
    clip = await service.probe(FeatureItem(data=probe.probe_photo()))
    assert clip == {"model": {"id": info["id"], "dim": TINY_EMBED_DIM}, "classes": None}


async def test_features_replies_say_where_the_time_went(
    make_service: Factory, tmp_path: Path
) -> None:
    service = await make_service()
    await service.wait_ready()
    paths = jpeg_files(tmp_path, range(3))
    started = time.perf_counter()
    reply = await service.features([FeatureItem(path=str(p)) for p in paths])
    elapsed_ms = (time.perf_counter() - started) * 1000
    timing = reply["timing"]
    assert timing["model_ms"] > 0 and timing["wait_ms"] >= 0
    # The wait is one item's, inside the request's own time.
    assert timing["wait_ms"] <= elapsed_ms
    empty = await service.features([])
    assert empty["timing"] == {"wait_ms": 0.0, "model_ms": 0.0}
