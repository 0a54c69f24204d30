"""The doctor's probe photo and stored values, against the real built-in model.

The stored values (``photodupd/data/probe.json``) must be what the real weights give
through the daemon's own decoder, and the tolerance must tell a right model from a wrong
preprocessing: these are what make the doctor's "model probe" row mean something.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from photodupd import probe
from photodupd.imaging import decode_item
from photodupd.models import backend, catalog
from photodupd.protocol import FeatureItem
from tests.daemon.probe_values import CAT_CLASSES, builtin_values


@pytest.fixture(scope="module")
def builtin() -> backend.BuiltinModel:
    backend.configure_threads(2)
    return backend.BuiltinModel()


def embed(model: backend.BuiltinModel, picture: Image.Image) -> np.ndarray:
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=95)
    decoded = decode_item(FeatureItem(data=buffer.getvalue()), model.spec)
    assert decoded.pixels is not None
    return model.embed(decoded.pixels[None])[0]


def test_the_stored_values_are_what_the_real_model_gives(builtin: backend.BuiltinModel) -> None:
    fresh, scores = builtin_values(builtin)
    stored = probe.shipped_values()[catalog.BUILTIN_ID]
    assert probe.cosine(fresh.embedding, stored.embedding) >= 0.9999
    assert stored.classes == CAT_CLASSES
    assert int(np.argmax(scores)) in stored.classes


def test_the_tolerance_tells_a_preprocessing_mistake_from_a_re_encode(
    builtin: backend.BuiltinModel,
) -> None:
    stored = probe.shipped_values()[catalog.BUILTIN_ID]
    photo = Image.open(io.BytesIO(probe.probe_photo())).convert("RGB")
    red, green, blue = photo.split()
    re_encoded = embed(builtin, photo)
    assert probe.cosine(list(re_encoded), stored.embedding) >= stored.min_cosine
    for wrong in (ImageOps.mirror(photo), Image.merge("RGB", (blue, green, red))):
        assert probe.cosine(list(embed(builtin, wrong)), stored.embedding) < stored.min_cosine


def test_recorded_values_round_trip_and_never_shadow_shipped_ones(tmp_path: object) -> None:
    vector = [0.6, 0.8, 0.0]
    path = probe.record("clip:test/file-abc", vector)
    assert path == probe.recorded_values_file()
    recorded = probe.values_for("clip:test/file-abc")
    assert recorded is not None and recorded.classes is None
    assert probe.cosine(recorded.embedding, vector) > 0.9999
    assert probe.values_for("clip:other/file-def") is None
    # The built-in model's values come from the package, whatever the state dir holds.
    probe.record(catalog.BUILTIN_ID, vector)
    shipped = probe.values_for(catalog.BUILTIN_ID)
    assert shipped is not None and shipped.source == "shipped"
