"""Train a two-layer MLP on scikit-learn's 8x8 digits with chainjit, end to end.

The model and loss are plain NumPy; `fit` compiles forward, backward and the Adam update into
one call per step. Run `python examples/mlp_digits.py` (add `--quick` or set CHAINJIT_QUICK=1
for a few-second smoke run).

Data parallel over MPI (the `.[mpi]` extra): `mpiexec -n 4 .venv/bin/python
examples/mlp_digits.py --data-parallel` trains on 4 processes, each on a quarter of every
batch of 32; the result is the same model as one process's.
"""

import os
import sys
import time

import numpy as np
from sklearn.datasets import load_digits

from compiler import nn
from runtime import distributed, fit, init, optim

QUICK = "--quick" in sys.argv or os.environ.get("CHAINJIT_QUICK") == "1"
DATA_PARALLEL = "--data-parallel" in sys.argv


def load_data(seed=0):
    """Digits scaled to [0, 1], split 80/20 with a fixed permutation."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


def init_params(seed=0, hidden=128):
    rng = np.random.default_rng(seed)
    return {
        "w1": init.he_uniform(rng, (64, hidden)), "b1": init.zeros((hidden,)),
        "w2": init.glorot_uniform(rng, (hidden, 10)), "b2": init.zeros((10,)),
    }


def predict(params, x):
    h = nn.relu(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def loss(params, x, y):
    return nn.cross_entropy(predict(params, x), y)


def accuracy(params, x, y):
    return nn.accuracy(predict(params, x), y)


def main():
    say = print if distributed.is_root() else (lambda *args, **kwargs: None)
    (x_train, y_train), (x_test, y_test) = load_data()
    params = init_params()
    epochs = 3 if QUICK else 20
    ranks = f", {distributed.size()} ranks (data parallel)" if DATA_PARALLEL else ""
    say(f"digits: {len(x_train)} train / {len(x_test)} test images, MLP 64-128-10, "
        f"Adam, {epochs} epochs{ranks}")
    start = time.perf_counter()
    schedule = optim.cosine(3e-3, total_steps=epochs * (len(x_train) // 32))
    history = fit(loss, params, (x_train, y_train), optim.Adam(schedule), epochs=epochs,
                  batch_size=32, eval_data=(x_test, y_test), metrics={"accuracy": accuracy},
                  data_parallel=DATA_PARALLEL)
    seconds = time.perf_counter() - start
    test_accuracy = history["eval_accuracy"][-1]  # the last evaluation: no extra compile
    first, later = history["epoch_time"][0], history["epoch_time"][1:]
    say(f"trained in {seconds:.1f} s (first epoch {first:.1f} s, later ones "
        f"{sum(later) / max(len(later), 1):.2f} s; a new step runs on the reference "
        f"interpreter while it compiles in the background, or loads from the disk cache); "
        f"final train loss {history['loss'][-1]:.4f}")
    say(f"test accuracy: {100 * test_accuracy:.2f}%")
    say("\nwhere to look next:")
    say("  python examples/ir_tour.py         the IR of a training step at every stage")
    say("  python examples/cnn_digits.py      conv2d + max-pool on the same digits")
    say("  python examples/char_transformer.py  a tiny causal transformer on text")
    say("  examples/README.md and README.md   what each piece does and where it lives")
    if not QUICK and test_accuracy < 0.97:
        sys.exit(f"expected at least 97% test accuracy, got {100 * test_accuracy:.2f}%")


if __name__ == "__main__":
    main()
