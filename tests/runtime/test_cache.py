"""The compile cache: a second process loads machine code from disk, and faults (corrupt or
foreign files, an unwritable folder, two processes compiling at once) are survived with a
warning and the right result."""

import glob
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from compiler import compile
from runtime.execution import cache
from runtime.execution.cache import CacheWarning

ROOT = Path(__file__).resolve().parents[2]
CHILD = textwrap.dedent("""
    import json, sys, numpy as np
    from compiler import compile
    f = compile(lambda x: np.tanh(x) * 2.0 + 1.0)
    out = f(np.full((3, 4), 0.5, np.float32))
    driver = next(iter(f._traces.values())).executable.driver
    stats = driver.stats
    print(json.dumps({"hits": sum(stats.cache_hits.values()),
                      "misses": sum(stats.cache_misses.values()),
                      "ok": bool(np.allclose(out, np.tanh(0.5) * 2 + 1)),
                      "passes": "compiler.pipeline" in sys.modules,
                      "registries": "numba.np.arraymath" in sys.modules}))
""")


def _run_child(folder, wait=True):
    env = {**os.environ, "CHAINJIT_CACHE_DIR": str(folder),
           "NUMBA_CACHE_DIR": str(Path(folder) / "numba"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return _result(proc) if wait else proc


def _result(proc):
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_second_process_loads_from_disk_without_compiling(tmp_path):
    first = _run_child(tmp_path)
    second = _run_child(tmp_path)
    assert first == {"hits": 0, "misses": 1, "ok": True, "passes": True, "registries": True}
    # the index gives the second process the generated module: no passes, no codegen, and
    # the machine code is loaded without Numba's registry refresh (most of a warm start)
    assert second == {"hits": 1, "misses": 0, "ok": True, "passes": False, "registries": False}


def test_two_processes_compiling_at_once_both_succeed(tmp_path):
    procs = [_run_child(tmp_path, wait=False) for _ in range(2)]
    results = [_result(p) for p in procs]
    assert all(r["ok"] for r in results)
    modules = list(tmp_path.glob("chainjit_gen_*.py"))
    assert len(modules) == 1 and not list(tmp_path.glob(".*.tmp"))
    assert _run_child(tmp_path)["ok"]


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINJIT_CACHE_DIR", str(tmp_path / "cache"))
    cache._MODULES.clear()
    yield tmp_path / "cache"
    cache._MODULES.clear()


def _tiny():
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    return compile(lambda x: np.tanh(x) * 2.0 + 1.0), x, np.tanh(x) * 2 + 1


def _check(f, x, want):
    np.testing.assert_allclose(f(x), want, rtol=1e-6)


def test_corrupt_module_file_is_rewritten_with_a_warning(fresh_cache):
    f, x, want = _tiny()
    _check(f, x, want)
    (path,) = fresh_cache.glob("chainjit_gen_*.py")
    good = path.read_text()
    path.write_text(good[: len(good) // 2])  # truncated
    cache._MODULES.clear()
    f, x, want = _tiny()
    with pytest.warns(CacheWarning, match="does not hold the expected code"):
        _check(f, x, want)
    assert path.read_text() == good


def test_module_from_another_version_is_replaced(fresh_cache):
    f, x, want = _tiny()
    _check(f, x, want)
    (path,) = fresh_cache.glob("chainjit_gen_*.py")
    good = path.read_text()
    path.write_text(good.replace(cache.environment_stamp(), "chainjit 0.0.1, numba 0.50.0"))
    cache._MODULES.clear()
    f, x, want = _tiny()
    with pytest.warns(CacheWarning, match="another version"):
        _check(f, x, want)
    assert path.read_text() == good


@pytest.mark.parametrize("suffix", [".nbi", ".nbc"])
def test_corrupt_numba_cache_file_is_survived(fresh_cache, suffix):
    f, x, want = _tiny()
    _check(f, x, want)
    (path,) = fresh_cache.glob("chainjit_gen_*.py")
    folders = [os.environ.get("NUMBA_CACHE_DIR", ""), str(fresh_cache)]
    files = [p for d in folders if d for p in glob.glob(f"{d}/**/{path.stem}*{suffix}",
                                                         recursive=True)]
    assert files
    for name in files:
        Path(name).write_bytes(b"\x80\x04garbage")  # a truncated pickle
    cache._MODULES.clear()
    sys.modules.pop(path.stem, None)
    f, x, want = _tiny()
    with pytest.warns(CacheWarning, match="Numba's cache"):
        _check(f, x, want)


def test_unwritable_cache_folder_falls_back_with_a_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CHAINJIT_CACHE_DIR", str(blocker / "cache"))
    cache._MODULES.clear()
    f, x, want = _tiny()
    with pytest.warns(CacheWarning, match="cannot be written"):
        _check(f, x, want)
    cache._MODULES.clear()


def test_dump_dir_gets_every_stage_and_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINJIT_DUMP_DIR", str(tmp_path))
    f, x, want = _tiny()
    _check(f, x, want)
    names = sorted(p.name.split(".", 1)[1] for p in tmp_path.iterdir())
    assert names == ["fused.ir", "joint.ir", "optimized.ir", "py", "traced.ir"]
    (source,) = tmp_path.glob("*.py")
    assert "def driver(" in source.read_text() and "= tanh" in source.read_text()


def test_cache_index_damaged_entry_or_new_codegen_setting_rebuilds(fresh_cache, monkeypatch):
    from compiler.codegen import loops as codegen_kernels

    def fn(x):
        return np.exp(x) * 3.0

    x = np.linspace(0, 1, 8).astype(np.float32)
    compile(fn)(x)
    entries = list((fresh_cache / "index").glob("*.pkl"))
    assert len(entries) == 1
    entries[0].write_bytes(b"not a pickle")
    with pytest.warns(CacheWarning, match="index entry"):
        np.testing.assert_allclose(compile(fn)(x), np.exp(x) * 3.0, rtol=1e-6)
    # a test (or a user) changing a codegen tunable gets code generated with it, not the index's
    monkeypatch.setattr(codegen_kernels, "PARALLEL_MIN_SIZE", 10**9)
    np.testing.assert_allclose(compile(fn)(x), np.exp(x) * 3.0, rtol=1e-6)
    assert len(list((fresh_cache / "index").glob("*.pkl"))) == 2


CONV_CHILD = textwrap.dedent("""
    import json, numpy as np
    from compiler import compile, nn, value_and_grad
    x = np.linspace(-1, 1, 2 * 2 * 6 * 6, dtype=np.float32).reshape(2, 2, 6, 6)
    w = np.linspace(-1, 1, 3 * 2 * 3 * 3, dtype=np.float32).reshape(3, 2, 3, 3)
    loss = lambda w, x: np.sum(nn.conv2d(x, w, padding=1) ** 2)
    value, grad = compile(value_and_grad(loss))(w, x)
    print(json.dumps({"value": float(value), "grad": np.asarray(grad).ravel().tolist()}))
""")


def test_a_driver_with_parallel_kernels_runs_when_loaded_from_disk(tmp_path):
    # The convolution kernels run Numba threads. A driver compiled in a process that loaded
    # the kernels from the disk cache does not record that loading it must launch Numba's
    # thread pool; a later process loading that driver crashed in its first convolution.
    # So: process a caches the kernels, b compiles the driver, c loads it.
    base = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "PYTHONPATH": str(ROOT)}
    runs = []
    for folder in ("a", "b", "b"):
        env = {**base, "CHAINJIT_CACHE_DIR": str(tmp_path / folder)}
        proc = subprocess.run([sys.executable, "-c", CONV_CHILD], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    from compiler import compile, nn, value_and_grad

    x = np.linspace(-1, 1, 2 * 2 * 6 * 6, dtype=np.float32).reshape(2, 2, 6, 6)
    w = np.linspace(-1, 1, 3 * 2 * 3 * 3, dtype=np.float32).reshape(3, 2, 3, 3)
    loss = lambda w, x: np.sum(nn.conv2d(x, w, padding=1) ** 2)  # noqa: E731
    value, grad = compile(value_and_grad(loss), backend="interpreter")(w, x)
    for run in runs:
        np.testing.assert_allclose(run["value"], value, rtol=1e-5)
        np.testing.assert_allclose(run["grad"], np.asarray(grad).ravel(), rtol=1e-4, atol=1e-4)
