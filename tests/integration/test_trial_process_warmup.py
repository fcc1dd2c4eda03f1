"""A pre-started trial process warms Keras up on a throwaway model; the trial's results must not change."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import numpy as np
import keras
from clot_hpo.search.trial import process as trial_process
if sys.argv[1] == "warm":
    trial_process._warm_up_keras()
keras.utils.set_random_seed(5)
model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.RandomFlip(), keras.layers.Conv2D(3, 3),
                          keras.layers.GlobalAveragePooling2D(), keras.layers.Dropout(0.5),
                          keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer="adam", loss="binary_crossentropy")
x = np.random.default_rng(0).random((8, 8, 8, 3)).astype("float32")
history = model.fit(x, np.arange(8) % 2, epochs=2, batch_size=4, verbose=0, shuffle=True)
print(repr([float(w.sum()) for w in model.get_weights()] + history.history["loss"]))
"""


def _run(mode: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", CODE, mode],
        capture_output=True,
        text=True,
        check=True,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    return out.stdout.strip().splitlines()[-1]


def test_warming_up_leaves_seeded_training_unchanged() -> None:
    assert _run("warm") == _run("cold")
