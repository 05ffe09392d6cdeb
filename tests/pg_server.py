"""Where the PostgreSQL test suites find their server, and how `make test` gets one.

    python3 tests/pg_server.py ensure     # what `make test` runs first (stdlib only)

The suites use `$DOTDO_TEST_PG` (default postgresql://postgres@127.0.0.1:5432/postgres).
When nothing answers there, `ensure` starts an installed cluster (`pg_ctlcluster`), or, when
run as root on a Debian-like machine with none installed, installs `postgresql`, lets local
TCP connections in without a password (a machine whose cluster this script created, for
tests only) and starts it. It never fails `make`: whether a missing server skips the suites
or fails them (under CI=true) is decided in tests/conftest.py, with the reason printed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    return os.environ.get("DOTDO_TEST_PG") or DEFAULT_URL


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at the URL's host and port."""
    try:
        with socket.create_connection(host_port(url), timeout=timeout):
            return True
    except OSError:
        return False


def _wait(url: str, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answers(url):
            return True
        time.sleep(0.25)
    return False


def _clusters() -> list[str]:
    root = Path("/etc/postgresql")
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def _start_clusters() -> None:
    for version in _clusters():
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
            check=False,
        )


def _trust_local(version: str) -> None:
    """Let 127.0.0.1 in without a password: only on a cluster this script installed."""
    hba = Path(f"/etc/postgresql/{version}/main/pg_hba.conf")
    line = "host all all 127.0.0.1/32 trust  # added by dotdo tests/pg_server.py\n"
    if hba.exists() and line not in hba.read_text():
        hba.write_text(line + hba.read_text())


def ensure(url: str) -> str:
    """Try to get a server answering at `url`; returns what happened, in one line."""
    if answers(url):
        return f"PostgreSQL answers at {host_port(url)[0]}:{host_port(url)[1]}"
    if shutil.which("pg_ctlcluster") and _clusters():
        _start_clusters()
        if _wait(url):
            return "started the installed PostgreSQL cluster"
    if os.geteuid() == 0 and shutil.which("apt-get") and not _clusters():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        done = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "postgresql"], check=False, env=env
        )
        if done.returncode == 0 and _clusters():
            for version in _clusters():
                _trust_local(version)
            _start_clusters()
            if _wait(url):
                return "installed and started PostgreSQL"
    return (
        f"note: no PostgreSQL at {url} (set DOTDO_TEST_PG, or install and start one); "
        "the PostgreSQL suites will skip (fail under CI=true)"
    )


if __name__ == "__main__":
    if sys.argv[1:] != ["ensure"]:
        sys.exit("usage: python3 tests/pg_server.py ensure")
    print(ensure(server_url()))
