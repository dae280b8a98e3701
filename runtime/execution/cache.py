"""The compile cache: generated modules in memory and on disk, and Numba's compiled code.

Codegen gives module source whose text encodes everything that changes the code (graph,
dtypes, and a stamp of the chainjit, Numba, NumPy and Python versions and the CPU), so the
key is a hash of that text, comments (the IR with its shapes) left out. `load_module(source)`
writes the module once, atomically (temp file + os.replace), to
``<cache>/chainjit_gen_<hash>.py`` and imports it under that name, placed in sys.modules
first: Numba's `cache=True` then keeps the machine code beside it (``__pycache__``, or
NUMBA_CACHE_DIR), so a new process loads it instead of compiling.

The folder is `CHAINJIT_CACHE_DIR` when set, else ``~/.cache/chainjit``. Faults are survived
with a warning: an unwritable folder (a temporary folder is used), a module file with other
content (corrupt, truncated or from another version: rewritten), an unreadable Numba index
or data file (runtime/execution/linking.py: `ensure_compiled` flushes it and compiles).
`CHAINJIT_DUMP_DIR` makes every build write its IR stages and generated source there
(`dump_build`).

A new process with a warm cache also skips the passes and codegen: `load_generated(key)`
finds the generated module and its argument plan (a pickled `Generated`) by a hash of the
TRACED graph (text and constant values) and of chainjit's own source files
(``<cache>/index/<key>.pkl``, written by `store_generated`), so only tracing, the module
import and Numba's load remain (and networkx, used by the passes, is never imported).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import pickle
import platform
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from types import ModuleType

_MODULES: dict[str, ModuleType] = {}  # source hash -> imported module (this process)
_LOADING = threading.RLock()  # held while a generated module is written and imported
_DIRS: dict[str, Path] = {}  # configured folder -> usable folder
CHAINJIT_VERSION = "0.1.0"


class CacheWarning(UserWarning):
    """The compile cache hit a fault; chainjit carried on (maybe compiling again)."""


@functools.lru_cache(maxsize=1)
def environment_stamp() -> str:
    """Versions and CPU the compiled code depends on; part of every generated module's text."""
    import llvmlite.binding as llvm
    import numba
    import numpy

    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:
        features = ""
    feature_hash = hashlib.sha256(features.encode()).hexdigest()[:8]
    return (f"chainjit {CHAINJIT_VERSION}, numba {numba.__version__}, numpy {numpy.__version__}, "
            f"python {platform.python_version()}, cpu {platform.machine()} "
            f"{llvm.get_host_cpu_name()} {feature_hash}")


def configured_dir() -> Path:
    env = os.environ.get("CHAINJIT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "chainjit"


def cache_dir() -> Path:
    """The usable cache folder: the configured one, or a temporary one if it is not writable."""
    wanted = configured_dir()
    key = str(wanted)
    if key not in _DIRS:
        try:
            wanted.mkdir(parents=True, exist_ok=True, mode=0o700)  # private whatever the umask
            fd, probe = tempfile.mkstemp(dir=wanted, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
            _DIRS[key] = wanted
        except OSError as error:
            _DIRS[key] = _fallback_dir(wanted, error)
        _DIRS[key] = _trusted_dir(_DIRS[key])
        _check_numba_cache_dir()
    return _DIRS[key]


def _fallback_dir(wanted: Path, error: Exception) -> Path:
    fallback = Path(tempfile.mkdtemp(prefix="chainjit-cache-"))
    warnings.warn(
        f"chainjit: the cache folder {wanted} cannot be written ({error}); compiled code goes "
        f"to {fallback} for this process and will not be reused by the next one. Set "
        "CHAINJIT_CACHE_DIR to a writable folder.", CacheWarning, stacklevel=3)
    return fallback


GENERATED_PREFIX = "chainjit_gen_"  # a driver's module
KERNEL_PREFIX = "chainjit_k_"  # a kernel's module (runtime/execution/linking.py)


def module_name(source: str, prefix: str = GENERATED_PREFIX) -> str:
    """The module name of a generated text (already `cached_text`): a hash of it."""
    return prefix + hashlib.sha256(source.encode()).hexdigest()[:24]


# -- trust: the cache holds code this process imports and unpickles ----------------------------
# As ssh and pip treat their files: a folder or file that another user owns or can write is
# not used (a warning, and a private folder of this process instead), and a generated
# module's text must hash to its name before it runs.


def _owner(path: Path) -> int:
    return path.stat().st_uid


def unsafe_reason(path: Path) -> str | None:
    """Why `path` (a cache folder or file) must not be trusted, or None: it belongs to
    another user, or group or others may write it."""
    if not hasattr(os, "getuid"):  # Windows: no POSIX owners or modes to check
        return None
    try:
        owner, mode = _owner(path), path.stat().st_mode
    except OSError as error:
        return f"it cannot be inspected ({error})"
    if owner != os.getuid():
        return f"it belongs to another user (uid {owner}, not {os.getuid()})"
    if mode & 0o022:
        who = " and ".join(w for w, bit in (("its group", 0o020), ("other users", 0o002))
                           if mode & bit)
        return f"{who} can write it (mode {mode & 0o777:o})"
    return None


def _private_dir(reason: str, what: Path, warn: bool = True) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="chainjit-private-"))  # mode 700, this user's
    if warn:
        warnings.warn(
            f"chainjit: not using the cache {what}: {reason}, so anyone who can write there "
            f"could run code in this process. Compiled code is kept in {folder} (private, for "
            "this process only). Point CHAINJIT_CACHE_DIR at a folder only you can write "
            "(chmod 700).", CacheWarning, stacklevel=4)
    return folder


def _trusted_dir(folder: Path) -> Path:
    reason = unsafe_reason(folder)
    return folder if reason is None else _private_dir(reason, folder)


def _check_numba_cache_dir() -> None:
    """Numba unpickles its index from NUMBA_CACHE_DIR: an untrusted one is replaced by a
    private folder for this process."""
    configured = os.environ.get("NUMBA_CACHE_DIR")
    if not configured or not Path(configured).exists():
        return
    reason = unsafe_reason(Path(configured))
    if reason is not None:
        import numba

        numba.config.CACHE_DIR = str(_private_dir(reason, Path(configured)))


def verified_code(path: Path, name: str):
    """The code object of the generated module at `path`, after checking that this user owns
    the file, nobody else can write it, and its text hashes to `name`; None otherwise (with
    a warning). The text is read once and compiled from memory, so what was checked runs."""
    reason = unsafe_reason(path)
    if reason is None:
        text = path.read_bytes().decode("utf-8", errors="replace")
        prefix = KERNEL_PREFIX if name.startswith(KERNEL_PREFIX) else GENERATED_PREFIX
        if module_name(text, prefix) == name:
            return compile(text, str(path), "exec")
        reason = "its text does not match the hash in its name"
    warnings.warn(f"chainjit: not importing the cached module {path}: {reason}; it is "
                  "written again in a private folder", CacheWarning, stacklevel=4)
    return None




def cached_text(source: str) -> str:
    """The module as cached: comment lines dropped, except the environment stamp.

    The comments carry the IR with its concrete shapes; without them, a new batch size that
    generates the same code maps to the same file and the same compiled machine code.
    """
    stamp = f"# {environment_stamp()}"
    return "".join(line for line in source.splitlines(keepends=True)
                   if not line.lstrip().startswith("#") or line.rstrip() == stamp)


def load_module(source: str, prefix: str = GENERATED_PREFIX) -> ModuleType:
    """Import the generated module for `source`, writing its file first if needed. One module
    object per name in a process, whichever threads ask (a build in the background loads
    modules while the main thread may load the same)."""
    source = cached_text(source)
    name = module_name(source, prefix)
    with _LOADING:
        module = _MODULES.get(name)
        if module is None:
            module = _import_module(source, name)
        return module


def _import_module(source: str, name: str) -> ModuleType:
    try:
        path = _ensure_file(cache_dir(), name, source)
    except OSError as error:  # the folder went read-only under us: use a temporary one
        fallback = _fallback_dir(cache_dir(), error)
        _DIRS[str(configured_dir())] = fallback
        path = _ensure_file(fallback, name, source)
    code = verified_code(path, name)
    if code is None:  # a foreign or altered file: write it where only this process can
        path = _ensure_file(_private_dir("", path.parent, warn=False), name, source)
        code = verified_code(path, name)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # Numba's cache=True finds the function through it
    module.__chainjit_text__ = source  # what a compile worker loads (compile_worker.py)
    try:
        exec(code, module.__dict__)  # the checked text, not a second read of the file
    except BaseException:
        del sys.modules[name]
        raise
    _MODULES[name] = module
    return module


def _ensure_file(folder: Path, name: str, source: str) -> Path:
    path = folder / f"{name}.py"
    try:
        existing = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        existing = None
    except (OSError, UnicodeDecodeError) as error:
        existing = f"<unreadable: {error}>"
    if existing == source:
        return path
    if existing is not None:
        warnings.warn(
            f"chainjit: the cached module {path} does not hold the expected code (truncated, "
            "corrupt or written by another version); writing it again", CacheWarning,
            stacklevel=3)
    write_atomic(path, source)
    return path


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file so readers see the old content or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    binary = isinstance(data, bytes)
    try:
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_generated(key: str):
    """The `Generated` stored for `key` by an earlier process, or None."""
    path = cache_dir() / "index" / f"{key}.pkl"
    if path.exists():
        reason = unsafe_reason(path) or unsafe_reason(path.parent)
        if reason is not None:  # unpickling runs code: only this user's own entries
            warnings.warn(f"chainjit: not loading the cache index entry {path}: {reason}; "
                          "building again", CacheWarning, stacklevel=3)
            return None
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001 - a damaged entry is rebuilt
        warnings.warn(f"chainjit: the cache index entry {path} is unreadable ({error}); "
                      "building again", CacheWarning, stacklevel=3)
        return None


def store_generated(key: str, generated) -> None:
    folder = cache_dir() / "index"
    try:
        folder.mkdir(exist_ok=True, mode=0o700)
        write_atomic(folder / f"{key}.pkl",
                     pickle.dumps(generated, protocol=pickle.HIGHEST_PROTOCOL))
    except OSError as error:
        warnings.warn(f"chainjit: cannot write the cache index in {folder} ({error})",
                      CacheWarning, stacklevel=3)


def dump_build(name: str, stages: dict[str, str], source: str | None) -> Path | None:
    """With CHAINJIT_DUMP_DIR set, write each IR stage and the generated source there."""
    folder = os.environ.get("CHAINJIT_DUMP_DIR")
    if not folder:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256("".join(stages.values()).encode()).hexdigest()[:8]
    stem = f"{name}-{tag}"
    for stage, text in stages.items():
        write_atomic(folder / f"{stem}.{stage}.ir", text + "\n")
    if source is not None:
        write_atomic(folder / f"{stem}.py", source)
    return folder / stem
