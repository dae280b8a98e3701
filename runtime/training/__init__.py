"""What trains, above the API: optimisers (optim.py), `train_step` (step.py), `fit` and
`History` (loop.py), data parallelism over MPI (data_parallel.py), checkpoints
(checkpoint.py), initialisers (init.py), `fit`'s progress bar (progress.py) and loss curves
(plots.py). Public names are re-exported lazily by `runtime/__init__.py`."""
