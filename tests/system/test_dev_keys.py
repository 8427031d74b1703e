"""dev.py keeps its keys in its instance folder: made once, private, the same on every start."""
import stat
import subprocess
import sys

from cryptography.fernet import Fernet

from tests.services import ROOT

PRINT_KEYS = "import dev; env = dev.prepare_env(); print(env['SECRET_KEY']); print(env['PROMPTBEAT_FERNET_KEYS'])"


def keys(instance, **extra):
    env = {"PATH": "/usr/bin:/bin", "PROMPTBEAT_DEV_INSTANCE": str(instance), **extra}
    result = subprocess.run([sys.executable, "-c", PRINT_KEYS], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_the_fernet_key_is_made_once_and_kept_across_restarts(tmp_path):
    secret, fernet_key = keys(tmp_path)
    token = Fernet(fernet_key.encode()).encrypt(b"sk-kept")
    assert keys(tmp_path) == [secret, fernet_key]
    assert Fernet(fernet_key.encode()).decrypt(token) == b"sk-kept"
    for name in ("secret_key", "fernet_key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert keys(tmp_path / "another")[1] != fernet_key


def test_a_key_from_the_environment_wins_and_nothing_is_written(tmp_path):
    given = Fernet.generate_key().decode()
    assert keys(tmp_path, PROMPTBEAT_FERNET_KEYS=given)[1] == given
    assert not (tmp_path / "fernet_key").exists()
