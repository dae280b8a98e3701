"""The cache holds code chainjit imports and unpickles: a folder or file that another user can
write or owns is refused with a warning (a private folder is used instead), and a generated
module whose text does not hash to its name is never run."""

from __future__ import annotations

import os
import pickle
import stat

import numpy as np
import pytest

from compiler import compile
from runtime.execution import cache
from runtime.execution.cache import CacheWarning


@pytest.fixture
def cache_folder(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("CHAINJIT_CACHE_DIR", str(folder))
    monkeypatch.setattr(cache, "_DIRS", {})
    monkeypatch.setattr(cache, "_MODULES", {})
    return folder


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_folder_others_can_write_is_refused_for_a_private_one(cache_folder):
    os.chmod(cache_folder, 0o777)
    with pytest.warns(CacheWarning, match="other users can write it"):
        used = cache.cache_dir()
    assert used != cache_folder
    assert _mode(used) == 0o700 and os.stat(used).st_uid == os.getuid()
    f = compile(lambda x: np.tanh(x) + 1.0)
    assert np.allclose(f(np.zeros(3)), 1.0)
    assert not list(cache_folder.glob("chainjit_gen_*.py")), "nothing written in the 777 folder"


def test_a_folder_owned_by_another_user_is_refused(cache_folder, monkeypatch):
    real = cache._owner
    monkeypatch.setattr(cache, "_owner", lambda p: 4242 if p == cache_folder else real(p))
    with pytest.warns(CacheWarning, match="belongs to another user"):
        assert cache.cache_dir() != cache_folder


def test_a_private_folder_is_used_without_a_warning(cache_folder, recwarn):
    assert cache.cache_dir() == cache_folder
    assert not [w for w in recwarn if issubclass(w.category, CacheWarning)]


SOURCE = "VALUE = 42\n"


def test_a_module_file_owned_by_another_user_is_not_imported(cache_folder, monkeypatch):
    name = cache.module_name(cache.cached_text(SOURCE))
    planted = cache_folder / f"{name}.py"
    planted.write_text(cache.cached_text(SOURCE))
    real = cache._owner
    monkeypatch.setattr(cache, "_owner", lambda p: 4242 if p == planted else real(p))
    with pytest.warns(CacheWarning, match="not importing the cached module"):
        module = cache.load_module(SOURCE)
    assert module.VALUE == 42
    assert os.path.dirname(module.__file__) != str(cache_folder)


def test_a_module_whose_text_does_not_match_its_hash_never_runs(cache_folder, monkeypatch,
                                                                 tmp_path):
    flag = tmp_path / "ran"
    name = cache.module_name(cache.cached_text(SOURCE))
    tampered = f"open({str(flag)!r}, 'w').close()\nVALUE = 666\n"

    def plant(folder, name_, source):  # the file changes after chainjit wrote it
        path = folder / f"{name_}.py"
        path.write_text(tampered if folder == cache_folder else source)
        os.chmod(path, 0o600)
        return path

    monkeypatch.setattr(cache, "_ensure_file", plant)
    with pytest.warns(CacheWarning, match="does not match the hash in its name"):
        module = cache.load_module(SOURCE)
    assert module.VALUE == 42 and not flag.exists()
    with pytest.warns(CacheWarning, match="does not match the hash"):
        assert cache.verified_code(cache_folder / f"{name}.py", name) is None


def test_an_index_entry_owned_by_another_user_is_not_unpickled(cache_folder, monkeypatch,
                                                               tmp_path):
    flag = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (open, (str(flag), "w"))

    (cache_folder / "index").mkdir(mode=0o700)
    entry = cache_folder / "index" / "k.pkl"
    entry.write_bytes(pickle.dumps(Payload()))
    real = cache._owner
    monkeypatch.setattr(cache, "_owner", lambda p: 4242 if p == entry else real(p))
    with pytest.warns(CacheWarning, match="not loading the cache index entry"):
        assert cache.load_generated("k") is None
    assert not flag.exists()


def test_an_index_entry_others_can_write_is_not_unpickled(cache_folder):
    (cache_folder / "index").mkdir(mode=0o700)
    entry = cache_folder / "index" / "k.pkl"
    entry.write_bytes(pickle.dumps({"harmless": 1}))
    os.chmod(entry, 0o666)
    with pytest.warns(CacheWarning, match="can write it"):
        assert cache.load_generated("k") is None


def test_folders_chainjit_creates_are_private_whatever_the_umask(tmp_path, monkeypatch):
    folder = tmp_path / "new" / "cache"
    monkeypatch.setenv("CHAINJIT_CACHE_DIR", str(folder))
    monkeypatch.setattr(cache, "_DIRS", {})
    old = os.umask(0o002)
    try:
        assert cache.cache_dir() == folder
        cache.store_generated("k", {"plan": 1})
    finally:
        os.umask(old)
    assert _mode(folder) == 0o700 and _mode(folder / "index") == 0o700
    assert cache.load_generated("k") == {"plan": 1}
