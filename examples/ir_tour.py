"""A tour of the IR: one small training step printed at every stage of the pipeline.

    traced     the graph `compile` recorded: forward, then the backward autodiff wrote into
               the same trace (notes say which VJP rule made each node), then the SGD update
    joint      the same graph handed to the passes
    optimized  after simplification, CSE and dead-code elimination
    fused      after elementwise fusion: each `fused` node's body is printed under it
    source     the Numba source the backend generates from the fused graph

Every line names the user's source line it came from. Run `python examples/ir_tour.py`
(`--quick` or CHAINJIT_QUICK=1 prints only the stage sizes and the fused graph).
"""

import os
import sys

import numpy as np

from compiler import nn
from compiler.pipeline import STAGES
from runtime import optim, train_step

QUICK = "--quick" in sys.argv or os.environ.get("CHAINJIT_QUICK") == "1"


def loss(params, x, y):
    h = np.tanh(x @ params["w1"] + params["b1"])
    return nn.cross_entropy(h @ params["w2"] + params["b2"], y)


def main():
    rng = np.random.default_rng(0)
    params = {
        "w1": rng.standard_normal((4, 8)).astype(np.float32), "b1": np.zeros(8, np.float32),
        "w2": rng.standard_normal((8, 3)).astype(np.float32), "b2": np.zeros(3, np.float32),
    }
    x = rng.standard_normal((16, 4)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    step = train_step(loss, optim.SGD(0.1, momentum=0.9))
    stages = ["traced", *STAGES]
    for stage in stages:
        text = step.ir(params, x, y, stage=stage)
        print(f"== {stage}: {text.count(' = ')} lines " + "=" * 40)
        if not QUICK or stage == "fused":
            print(text)
    compiled = step.compiled
    if hasattr(compiled, "source"):
        source = compiled.source(params, step.state, x, y)
        print(f"== generated Numba source: {len(source.splitlines())} lines " + "=" * 24)
        print(source if not QUICK else "\n".join(source.splitlines()[:40]) + "\n...")
    else:
        print("== (this backend does not expose generated source)")
    if not QUICK:  # running it compiles the source above with Numba
        print(f"\none step: loss {float(step(params, x, y)):.4f}")
    print("The same IR as Graphviz DOT: step.compiled.dot(params, step.state, x, y, stage=...)")


if __name__ == "__main__":
    main()
