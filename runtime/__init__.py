"""chainjit's runtime, in two parts that import one way:

- `runtime.execution`: what runs under the public API (executables, the compile cache,
  linking of machine code, BLAS thread control, background builds, machine facts, the MPI
  world). It imports nothing from `compiler/` and nothing from `runtime.training`.
- `runtime.training`: what sits above it (optimisers, `train_step`, `fit`, data parallelism,
  checkpoints, initialisers, progress bars, plots). It uses the compiler.

The public names stay here, imported lazily (training imports the compiler): `from runtime
import optim, train_step, fit` (and `TrainStep`, `History`, `init`, `checkpoint`,
`distributed`, `data_parallel`). The modules' own paths are the sub-packages'
(`import runtime.training.optim`); `runtime.optim` is an attribute, not a module path.
"""

# The imports are spelled out (not importlib with a string) so that tests/test_imports.py's
# graph sees what each lazy export runs.
def __getattr__(name):  # the public exports, imported on first use
    if name in ("fit", "History"):
        from runtime.training import loop

        return getattr(loop, name)
    if name in ("train_step", "TrainStep"):
        from runtime.training import step

        return getattr(step, name)
    if name == "optim":
        from runtime.training import optim

        return optim
    if name == "init":
        from runtime.training import init

        return init
    if name == "checkpoint":
        from runtime.training import checkpoint

        return checkpoint
    if name == "data_parallel":
        from runtime.training import data_parallel

        return data_parallel
    if name == "distributed":
        from runtime.execution import distributed

        return distributed
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), "fit", "History", "train_step", "TrainStep", "optim", "init",
                   "checkpoint", "data_parallel", "distributed"])
