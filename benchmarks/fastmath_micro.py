"""Micro benchmark: libm vs compiler.kernels.fastmath in Numba loops over 4,194,304 float32 values.

Run: .venv/bin/python benchmarks/fastmath_micro.py [--repeat N]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from compiler.kernels.fastmath import exp_f32, log_f32, sigmoid_f32, sin_f32, tanh_f32  # noqa: E402

N = 4_194_304


@numba.njit(error_model="numpy")
def tanh_libm(x, out):
    for i in range(x.size):
        out[i] = np.tanh(x[i])


@numba.njit(error_model="numpy")
def exp_libm(x, out):
    for i in range(x.size):
        out[i] = np.exp(x[i])


@numba.njit(error_model="numpy")
def tanh_fast(x, out):
    for i in range(x.size):
        out[i] = tanh_f32(x[i])


@numba.njit(error_model="numpy")
def exp_fast(x, out):
    for i in range(x.size):
        out[i] = exp_f32(x[i])


@numba.njit(error_model="numpy")
def log_fast(x, out):
    for i in range(x.size):
        out[i] = log_f32(x[i])


@numba.njit(error_model="numpy")
def sigmoid_fast(x, out):
    for i in range(x.size):
        out[i] = sigmoid_f32(x[i])


@numba.njit(error_model="numpy")
def sin_libm(x, out):
    for i in range(x.size):
        out[i] = np.sin(x[i])


@numba.njit(error_model="numpy")
def sin_fast(x, out):
    for i in range(x.size):
        out[i] = sin_f32(x[i])


@numba.njit(error_model="numpy")
def affine_tanh_fast(x, out, a, b):
    # the shape generated kernels have: an expression around the call
    for i in range(x.size):
        out[i] = tanh_f32(a * x[i] + b) * np.float32(0.5)


@numba.njit(error_model="numpy", parallel=True)
def tanh_fast_par(x, out):
    for i in numba.prange(x.size):
        out[i] = tanh_f32(x[i])


@numba.njit(error_model="numpy", parallel=True)
def tanh_libm_par(x, out):
    for i in numba.prange(x.size):
        out[i] = np.tanh(x[i])


@numba.njit(error_model="numpy")
def copy_loop(x, out):
    for i in range(x.size):
        out[i] = x[i]


def bench(fn, repeat):
    fn()  # warm up / compile
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(N) * 3).astype(np.float32)
    xpos = np.abs(x) + np.float32(1e-3)
    out = np.empty_like(x)
    a, b = np.float32(1.5), np.float32(0.25)
    rows = [
        ("copy loop (memory bound floor)", lambda: copy_loop(x, out)),
        ("numpy np.tanh", lambda: np.tanh(x, out=out)),
        ("numpy np.exp", lambda: np.exp(x, out=out)),
        ("njit loop np.tanh (libm)", lambda: tanh_libm(x, out)),
        ("njit loop np.exp (libm)", lambda: exp_libm(x, out)),
        ("njit loop tanh_f32", lambda: tanh_fast(x, out)),
        ("njit loop exp_f32", lambda: exp_fast(x, out)),
        ("njit loop log_f32", lambda: log_fast(xpos, out)),
        ("njit loop sigmoid_f32", lambda: sigmoid_fast(x, out)),
        ("njit loop tanh_f32(a*x+b)*0.5", lambda: affine_tanh_fast(x, out, a, b)),
        ("numpy np.sin", lambda: np.sin(x, out=out)),
        ("njit loop np.sin (libm)", lambda: sin_libm(x, out)),
        ("njit loop sin_f32", lambda: sin_fast(x, out)),
        ("prange np.tanh (libm)", lambda: tanh_libm_par(x, out)),
        (f"prange tanh_f32 ({numba.get_num_threads()} threads)", lambda: tanh_fast_par(x, out)),
    ]
    print(f"{N} float32 values, median of {args.repeat} runs")
    print(f"{'variant':42s} {'ms':>8s}")
    for name, fn in rows:
        print(f"{name:42s} {bench(fn, args.repeat):8.2f}")


if __name__ == "__main__":
    main()
