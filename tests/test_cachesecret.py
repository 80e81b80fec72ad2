"""The score cache's secret: from NAA_GUARD_CACHE_KEY, else a per-user key file created on first use, readable by its owner only."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from naa_guard.scoring import cachesecret


def test_a_key_file_is_created_once_owner_only_and_the_environment_overrides_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cachesecret.ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    cachesecret._user_secret.cache_clear()
    first = cachesecret.cache_secret()
    path = tmp_path / "naa-guard" / "cache.key"
    assert path.read_bytes() == first and len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cachesecret._user_secret.cache_clear()
    assert cachesecret.cache_secret() == first  # read back, not drawn again
    monkeypatch.setenv(cachesecret.ENV, "a CI secret")
    assert cachesecret.cache_secret() == b"a CI secret"


def test_without_a_writable_config_folder_each_process_draws_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cachesecret.ENV, raising=False)
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "file"))
    cachesecret._user_secret.cache_clear()
    secret = cachesecret.cache_secret()
    assert len(secret) >= 32 and cachesecret.cache_secret() == secret  # one per process: entries it writes are used in this run
    cachesecret._user_secret.cache_clear()


def test_a_key_file_that_is_a_pipe_is_never_opened_and_never_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import threading

    monkeypatch.delenv(cachesecret.ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "naa-guard").mkdir()
    os.mkfifo(tmp_path / "naa-guard" / "cache.key")
    cachesecret._user_secret.cache_clear()
    found: list[bytes] = []
    reader = threading.Thread(target=lambda: found.append(cachesecret.cache_secret()), daemon=True)
    reader.start()
    reader.join(timeout=20)  # reading the pipe would block until a writer came
    cachesecret._user_secret.cache_clear()
    assert found and len(found[0]) >= 32, "the cache secret hung on a named pipe"
