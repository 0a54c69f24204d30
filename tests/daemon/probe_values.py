"""The built-in model's probe values (``photodupd/data/probe.json``), computed with the real
weights exactly as the daemon computes them: the decoder's ``decode_item`` with the model's
input spec, then one forward pass.

Regenerate (after a deliberate change to the model or the preprocessing) with
``python -m tests.daemon.probe_values``; ``tests/daemon/test_probe.py`` checks that the
stored values are what the real model gives, so a stale file fails the suite.
"""

from __future__ import annotations

import json

import numpy as np

from photodupd import probe
from photodupd.imaging import decode_item
from photodupd.models import backend, catalog
from photodupd.protocol import FeatureItem

#: ImageNet 281-285: tabby, tiger cat, Persian, Siamese, Egyptian cat.
CAT_CLASSES = frozenset(range(281, 286))
CAT_NAME = "a cat (ImageNet 281-285: tabby, tiger cat, Persian, Siamese, Egyptian cat)"


def builtin_values(model: backend.BuiltinModel) -> tuple[probe.ProbeValues, np.ndarray]:
    """The built-in model's probe values and its class probabilities for the probe photo."""
    decoded = decode_item(FeatureItem(data=probe.probe_photo()), model.spec)
    assert decoded.pixels is not None
    embedding = model.embed(decoded.pixels[None])[0]
    scores = model.classify(decoded.pixels[None])[0]
    values = probe.ProbeValues(
        catalog.BUILTIN_ID,
        tuple(float(x) for x in embedding),
        classes=CAT_CLASSES,
        class_name=CAT_NAME,
    )
    return values, scores


def main() -> None:
    backend.configure_threads(2)
    values, scores = builtin_values(backend.BuiltinModel())
    top = int(np.argmax(scores))
    assert top in CAT_CLASSES, f"the probe photo is class {top}, not a cat"
    document = {
        "photo": probe.PROBE_PHOTO.name,
        "source": "scikit-image data.chelsea (CC0, Stefan van der Walt): the centre "
        "300x300, resized to 224x224 (Lanczos), JPEG quality 88",
        "models": {values.model_id: values.to_json()},
    }
    probe.SHIPPED_VALUES.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {probe.SHIPPED_VALUES} (top class {top}, p={scores[top]:.3f})")


if __name__ == "__main__":
    main()
