"""What executes: `Executable` (executable.py), the compile cache (cache.py), machine code
linked across modules (linking.py), compiles in a child process (compile_worker.py) and in the
background (background.py), BLAS thread control (blas.py), driver argument kinds (specs.py),
this machine's facts (machine.py) and the MPI world (distributed.py). Nothing here imports
`compiler/` or `runtime.training` (tests/test_imports.py checks)."""
