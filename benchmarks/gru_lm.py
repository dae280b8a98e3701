"""GRU language-model SGD step (issue 18): chainjit's `scan` against JAX `lax.scan` and
PyTorch `nn.GRU`, side by side; and the cold compile time against the sequence length.

The workload: character ids (batch 32, sequence 64) from a vocabulary of 64, an embedding of
64, one GRU layer of hidden 128 (PyTorch's equations), a linear head and the mean
cross-entropy of the next character; one SGD step (lr 0.1) updating every parameter. All
three systems compute the input projection for every step in one matmul before the loop
(as cuDNN and PyTorch's CPU GRU do) and loop over time in the compiled code. Each system
runs in a worker process of its own.

    python benchmarks/gru_lm.py                 # steady state: alternating paired runs
    python benchmarks/gru_lm.py --cold          # cold define + first call, seq 64 and seq 8
    python benchmarks/gru_lm.py --quick         # fewer repeats

Cold runs are child processes with fresh CHAINJIT_CACHE_DIR and NUMBA_CACHE_DIR folders.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH, SEQ, HIDDEN, LR = 32, 64, 128, 0.1
# --vocab/--embed change these (children inherit them through the environment)
VOCAB = int(os.environ.get("GRU_LM_VOCAB", 64))
EMBED = int(os.environ.get("GRU_LM_EMBED", 64))


def make(seq: int = SEQ, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (BATCH, seq + 1))
    scale = 1.0 / np.sqrt(HIDDEN)
    f32 = lambda shape, s: (rng.uniform(-s, s, shape)).astype(np.float32)  # noqa: E731
    params = {"emb": f32((VOCAB, EMBED), 0.1), "w_x": f32((EMBED, 3 * HIDDEN), scale),
              "w_h": f32((HIDDEN, 3 * HIDDEN), scale), "b_x": f32((3 * HIDDEN,), scale),
              "b_h": f32((3 * HIDDEN,), scale), "head": f32((HIDDEN, VOCAB), scale),
              "head_b": f32((VOCAB,), scale)}
    return ids[:, :-1].copy(), ids[:, 1:].copy(), params


# -- chainjit ------------------------------------------------------------------------------


def chainjit_step(params):
    from compiler import nn, scan
    from runtime import optim, train_step

    def loss(p, x, y):
        b = x.shape[0]
        gx = nn.embedding(p["emb"], x) @ p["w_x"] + p["b_x"]

        def step(h, g):
            h = nn.gru_cell(g, h, None, p["w_h"], None, p["b_h"])
            return h, h

        _, hs = scan(step, np.zeros((b, HIDDEN), np.float32), gx.transpose(1, 0, 2))
        return nn.cross_entropy(hs.transpose(1, 0, 2) @ p["head"] + p["head_b"], y)

    step = train_step(loss, optim.SGD(LR), wait=True)
    return lambda x, y: step(params, x, y)


# -- JAX -----------------------------------------------------------------------------------


def jax_step(params):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_platforms", "cpu")

    def loss(p, x, y):
        gx = p["emb"][x] @ p["w_x"] + p["b_x"]

        def step(h, g):
            gh = h @ p["w_h"] + p["b_h"]
            r = jax.nn.sigmoid(g[:, :HIDDEN] + gh[:, :HIDDEN])
            z = jax.nn.sigmoid(g[:, HIDDEN:2 * HIDDEN] + gh[:, HIDDEN:2 * HIDDEN])
            n = jnp.tanh(g[:, 2 * HIDDEN:] + r * gh[:, 2 * HIDDEN:])
            h = n + z * (h - n)
            return h, h

        _, hs = jax.lax.scan(step, jnp.zeros((x.shape[0], HIDDEN), jnp.float32),
                             gx.transpose(1, 0, 2))
        logits = hs.transpose(1, 0, 2) @ p["head"] + p["head_b"]
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, y[..., None], axis=-1))

    @jax.jit
    def update(p, x, y):
        value, grads = jax.value_and_grad(loss)(p, x, y)
        return value, jax.tree_util.tree_map(lambda a, g: a - LR * g, p, grads)

    state = {"p": {k: jnp.asarray(v) for k, v in params.items()}}

    def run(x, y):
        value, state["p"] = update(state["p"], x, y)
        return value.block_until_ready()

    return run


# -- PyTorch (eager) -----------------------------------------------------------------------


def torch_step(params):
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    emb = torch.nn.Embedding(VOCAB, EMBED)
    gru = torch.nn.GRU(EMBED, HIDDEN)
    head = torch.nn.Linear(HIDDEN, VOCAB)
    with torch.no_grad():  # the same parameters (PyTorch stores weights transposed)
        emb.weight.copy_(torch.tensor(params["emb"]))
        gru.weight_ih_l0.copy_(torch.tensor(params["w_x"].T))
        gru.weight_hh_l0.copy_(torch.tensor(params["w_h"].T))
        gru.bias_ih_l0.copy_(torch.tensor(params["b_x"]))
        gru.bias_hh_l0.copy_(torch.tensor(params["b_h"]))
        head.weight.copy_(torch.tensor(params["head"].T))
        head.bias.copy_(torch.tensor(params["head_b"]))
    modules = torch.nn.ModuleList([emb, gru, head])
    opt = torch.optim.SGD(modules.parameters(), lr=LR)

    def run(x, y):
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        opt.zero_grad(set_to_none=True)
        hs, _ = gru(emb(x).transpose(0, 1))
        logits = head(hs.transpose(0, 1))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss.item()

    return run


SYSTEMS = {"chainjit": chainjit_step, "jax": jax_step, "torch": torch_step}


def worker(system: str) -> None:
    """One system in a process of its own (their thread pools would spin against each other
    in one process): builds and warms its step, prints its first loss, then for each line
    `n` on stdin runs n steps and prints their seconds as JSON."""
    x, y, params = make()
    run = SYSTEMS[system](params)
    first = float(run(x, y))
    run(x, y)
    print(json.dumps({"loss": first}), flush=True)
    for line in sys.stdin:
        times = []
        for _ in range(int(line)):
            start = time.perf_counter()
            run(x, y)
            times.append(time.perf_counter() - start)
        print(json.dumps(times), flush=True)


def steady(repeats: int, rounds: int) -> dict[str, list[float]]:
    """Per-step seconds of each system, interleaved: each round runs every system's worker
    `repeats` steps in a rotating order (one at a time), so a noisy neighbour hurts every
    system alike."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    workers = {name: subprocess.Popen([sys.executable, __file__, "--worker", name], env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, cwd=ROOT)
               for name in SYSTEMS}
    first = {name: json.loads(w.stdout.readline())["loss"] for name, w in workers.items()}
    print("first-step losses (same data and parameters):",
          ", ".join(f"{k} {v:.5f}" for k, v in first.items()))
    times: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    names = list(SYSTEMS)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            workers[name].stdin.write(f"{repeats}\n")
            workers[name].stdin.flush()
            times[name] += json.loads(workers[name].stdout.readline())
    for w in workers.values():
        w.stdin.close()
        w.wait()
    return times


def cold_child(system: str, seq: int) -> None:
    """Define + first call in this (fresh) process; prints the seconds as JSON."""
    start = time.perf_counter()
    x, y, params = make(seq)
    run = SYSTEMS[system](params)
    run(x, y)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def cold(system: str, seq: int) -> float:
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as numba:
        env = {**os.environ, "CHAINJIT_CACHE_DIR": cache, "NUMBA_CACHE_DIR": numba,
               "PYTHONPATH": ROOT}
        out = subprocess.run([sys.executable, __file__, "--cold-child", system, str(seq)],
                             env=env, capture_output=True, text=True, check=True, cwd=ROOT)
        return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cold-child", nargs=2, metavar=("SYSTEM", "SEQ"))
    parser.add_argument("--worker", metavar="SYSTEM")
    parser.add_argument("--systems", default="chainjit,jax,torch")
    parser.add_argument("--vocab", type=int, help="vocabulary size (default 64)")
    parser.add_argument("--embed", type=int, help="embedding size (default 64)")
    args = parser.parse_args()
    global VOCAB, EMBED
    for name, value in (("VOCAB", args.vocab), ("EMBED", args.embed)):
        if value is not None:
            os.environ[f"GRU_LM_{name}"] = str(value)
    VOCAB, EMBED = args.vocab or VOCAB, args.embed or EMBED
    if args.cold_child:
        cold_child(args.cold_child[0], int(args.cold_child[1]))
        return
    if args.worker:
        worker(args.worker)
        return
    for name in [n for n in SYSTEMS if n not in args.systems.split(",")]:
        del SYSTEMS[name]
    print(f"GRU LM SGD step: batch {BATCH}, seq {SEQ}, vocab {VOCAB}, embed {EMBED}, "
          f"hidden {HIDDEN}; {os.cpu_count()} CPUs")
    if args.cold:
        rounds = 1 if args.quick else 2
        for system in SYSTEMS:
            for seq in (8, 64) * rounds:  # alternating
                print(f"cold define + first call  {system:9s} seq {seq:3d}: "
                      f"{cold(system, seq):6.2f} s", flush=True)
        return
    times = steady(repeats=5 if args.quick else 10, rounds=3 if args.quick else 8)
    for name, ts in times.items():
        print(f"{name:9s} step: median {statistics.median(ts) * 1e3:7.2f} ms  "
              f"min {min(ts) * 1e3:7.2f} ms  ({len(ts)} steps)")


if __name__ == "__main__":
    main()
