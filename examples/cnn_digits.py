"""A small convolutional network on scikit-learn's 8x8 digits: conv3x3 -> relu -> maxpool 2
-> conv3x3 -> relu -> maxpool 2 -> dense, trained with `fit` and Adam.

`nn.conv2d` is one CONV2D primitive (im2col per image + a GEMM in compiled code); its
gradient is two more CONV2D nodes (the input and the weight gradient).
Run `python examples/cnn_digits.py`
(`--quick` or CHAINJIT_QUICK=1 for a smoke run).
"""

import os
import sys
import time

import numpy as np
from sklearn.datasets import load_digits

from compiler import nn
from runtime import fit, init, optim

QUICK = "--quick" in sys.argv or os.environ.get("CHAINJIT_QUICK") == "1"


def load_data(seed=0):
    """Digits as (N, 1, 8, 8) images in [0, 1], split 80/20 with a fixed permutation."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


def init_params(seed=0, c1=16, c2=32):
    rng = np.random.default_rng(seed)
    return {
        "c1w": init.he_uniform(rng, (c1, 1, 3, 3)), "c1b": init.zeros((c1,)),
        "c2w": init.he_uniform(rng, (c2, c1, 3, 3)), "c2b": init.zeros((c2,)),
        "wd": init.glorot_uniform(rng, (c2 * 2 * 2, 10)), "bd": init.zeros((10,)),
    }


def predict(params, x):
    h = nn.max_pool2d(nn.relu(nn.conv2d(x, params["c1w"], params["c1b"], padding=1)), 2)
    h = nn.max_pool2d(nn.relu(nn.conv2d(h, params["c2w"], params["c2b"], padding=1)), 2)
    return h.reshape(h.shape[0], -1) @ params["wd"] + params["bd"]


def loss(params, x, y):
    return nn.cross_entropy(predict(params, x), y)


def accuracy(params, x, y):
    return nn.accuracy(predict(params, x), y)


def main():
    (x_train, y_train), (x_test, y_test) = load_data()
    params = init_params()
    epochs = 1 if QUICK else 25
    if QUICK:  # a smoke run: a few steps
        x_train, y_train = x_train[:256], y_train[:256]
    print(f"digits: {len(x_train)} train / {len(x_test)} test images, "
          f"conv16-pool-conv32-pool-dense, Adam, {epochs} epochs")
    start = time.perf_counter()
    schedule = optim.cosine(3e-3, total_steps=epochs * (len(x_train) // 32))
    history = fit(loss, params, (x_train, y_train), optim.Adam(schedule), epochs=epochs,
                  batch_size=32, eval_data=(x_test, y_test), metrics={"accuracy": accuracy})
    seconds = time.perf_counter() - start
    test_accuracy = history["eval_accuracy"][-1]  # the last evaluation: no extra compile
    print(f"trained in {seconds:.1f} s; final train loss {history['loss'][-1]:.4f}")
    print(f"test accuracy: {100 * test_accuracy:.2f}%")
    if not QUICK and test_accuracy < 0.98:
        sys.exit(f"expected at least 98% test accuracy, got {100 * test_accuracy:.2f}%")


if __name__ == "__main__":
    main()
