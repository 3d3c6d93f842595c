"""After a widget's warm-up, a run imports nothing more in its worker thread.

Imports in a worker set off full garbage collections that freeze napari for 100–300 ms (see
napari_lggseg/warmup.py); the widgets warm up while they are built. Checked in a fresh
interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    from napari_lggseg import warmup
    from napari_lggseg.synthetic import make_synthetic_patient  # the test's own data
    warmup.for_training()
    before = set(sys.modules)

    from napari_lggseg.inference import Segmenter
    from napari_lggseg.preprocess import Recipe
    from napari_lggseg.train_data import TrainVolume
    from napari_lggseg.training import TrainConfig, train
    from napari_lggseg.uncertainty import slices_to_review
    from napari_lggseg.unet import UNet

    image, mask = make_synthetic_patient(seed=1, n_slices=6, size=64)
    recipe = Recipe(size=32, context=0)
    net = UNet(recipe.in_channels, 1, 4)
    vol = TrainVolume("SYNTH", image, mask)
    train(net, recipe, [vol], [vol], TrainConfig(epochs=1, steps_per_epoch=1, batch_size=2, device="cpu"),
          fine_tune=True)
    seg = Segmenter(net, recipe, "cpu")
    slices_to_review(seg.probabilities(image)[0])
    print(sorted(m for m in set(sys.modules) - before if not m.startswith("encodings")))
""")


def test_runs_import_nothing_after_warm_up():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
