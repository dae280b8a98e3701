"""chainjit's runtime: executables, the compile cache, optimisers and training loops."""


def __getattr__(name):  # training exports, imported lazily (they import the compiler)
    if name in ("fit", "train_step", "TrainStep", "History"):
        from runtime import training

        return getattr(training, name)
    if name in ("optim", "init", "checkpoint", "distributed", "data_parallel"):
        import importlib

        return importlib.import_module(f"runtime.{name}")
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
