"""A real PostgreSQL server for the tests: started once per session on 127.0.0.1 in a data directory of its own,
stopped and removed at the end. Each test asks it for a fresh database (``new_database``).

The server binaries (initdb, pg_ctl) are usually not on PATH: ``pg_config --bindir`` names their folder. The server
refuses to run as root, so under root it runs as the ``postgres`` system user (``runuser``), on a directory made
with ``mkdtemp`` and handed to that user (pytest's tmp dirs are private to root).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def server_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl, or None where no PostgreSQL server is installed."""
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(Path(out.stdout.strip()))
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)  # Debian: newest first
    return next((d for d in candidates if (d / "initdb").is_file() and (d / "pg_ctl").is_file()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    port: int
    _names: Iterator[int] = field(default_factory=itertools.count)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "t") -> str:
        """Create an empty database and return its URL (plain postgresql://, as a user would type it)."""
        import psycopg

        name = f"{prefix}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = server_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server installed (pg_config --bindir names no initdb/pg_ctl)")
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    home = Path(tempfile.mkdtemp(prefix="ofa-pg-"))
    if as_root:
        shutil.chown(home, "postgres")
    data, port = home / "data", _free_port()

    def pg(*args: str) -> None:
        out = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            log = (home / "log").read_text() if (home / "log").exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {out.stdout}{out.stderr}{log}")

    try:
        pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        # fsync off: a test server's data does not have to survive a power cut
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(home / "log"), "-w", "-o",
           f"-h 127.0.0.1 -p {port} -k {home} -F -c max_connections=200", "start")
        yield PostgresServer(port)
    finally:
        if (data / "postmaster.pid").exists():
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)
