"""A private PostgreSQL 15 cluster for the tests (the `pglab` fixture, one
per test session): Debian's initdb and pg_ctl run as the `postgres` OS
user on a data dir and a unix socket dir under a temp dir of its own,
serving TCP on a free port of 127.0.0.1 only. A role `mecorch` with a
password (in a 0600 file) gets a fresh database per `database()` call.
`stop()`, `start()` and `restart()` drive that server only (pg_ctl -D its
data dir); the session's end stops it and removes the dir. Debian's own
cluster (`15 main`) is neither used nor touched.

The server runs with fsync off: a test cluster that never outlives its
session need not survive a power cut, and it keeps the tests fast.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from support.lab import free_port

BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"
ROLE = "mecorch"


class PgLab:
    def __init__(self):
        if not (BIN / "initdb").is_file():
            pytest.fail(f"PostgreSQL 15 ({BIN}/initdb) is missing: run "
                        f"`bash vagrant/provision.sh` as root first", pytrace=False)
        try:
            self._pw = pwd.getpwnam(OS_USER)
        except KeyError:
            pytest.fail(f"the {OS_USER} OS user (Debian's postgresql package) is missing: "
                        f"run `bash vagrant/provision.sh` as root first", pytrace=False)
        self.dir = Path(tempfile.mkdtemp(prefix="mecorch-pglab-"))
        self.data, self.sock, self.log = self.dir / "data", self.dir / "sock", self.dir / "pg.log"
        self.port = free_port()
        self.password_file = self.dir / "mecorch.password"
        self.running = False

    # ------------------------------------------------------------ the server
    def _as_postgres(self, *argv: str, timeout: float = 120) -> None:
        p = subprocess.run([str(a) for a in argv], user=self._pw.pw_uid,
                           group=self._pw.pw_gid, extra_groups=[], cwd=self.dir,
                           capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed ({p.returncode}): {p.stderr[-2000:]}\n{tail}")

    def make(self) -> None:
        os.chown(self.dir, self._pw.pw_uid, self._pw.pw_gid)
        self.sock.mkdir(mode=0o700)
        os.chown(self.sock, self._pw.pw_uid, self._pw.pw_gid)
        # local socket: trust (only this dir's owner and root reach it);
        # TCP: passwords (scram-sha-256), as an MEO connects
        self._as_postgres(BIN / "initdb", "-D", self.data, "-U", OS_USER, "-E", "UTF8",
                          "--auth-local=trust", "--auth-host=scram-sha-256")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.sock}'\n"
                    "fsync = off\nfull_page_writes = off\nsynchronous_commit = off\n"
                    "max_connections = 50\nshared_buffers = 32MB\n")
        self.start()
        password = secrets.token_urlsafe(18)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        self.admin(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{password}'")

    def start(self) -> None:
        self._as_postgres(BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60",
                          "start")
        self.running = True

    def stop(self) -> None:
        """Fast shutdown: the server ends every connection now."""
        self._as_postgres(BIN / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "60",
                          "stop")
        self.running = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        try:
            if self.running or (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ databases
    def admin(self, sql: str, dbname: str = "postgres") -> list:
        """One statement as the superuser, over the private socket."""
        import psycopg
        with psycopg.connect(host=str(self.sock), port=self.port, user=OS_USER,
                             dbname=dbname, autocommit=True) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    def database(self) -> dict:
        """A new empty database owned by the role: its `meo.database`
        section (the DSN without a password, the password file)."""
        name = f"t_{secrets.token_hex(6)}"
        self.admin(f"CREATE DATABASE {name} OWNER {ROLE}")
        return {"dsn": f"postgresql://{ROLE}@127.0.0.1:{self.port}/{name}",
                "password_file": str(self.password_file)}

    def drop(self, database: dict) -> None:
        name = database["dsn"].rsplit("/", 1)[1]
        if self.running:
            self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def pglab():
    lab = PgLab()
    try:
        lab.make()
        yield lab
    finally:
        lab.remove()


@pytest.fixture
def pgdatabase(pglab):
    """A fresh database of the session's cluster (its `meo.database`
    section), dropped after the test; the server is running again after a
    test that stopped it."""
    database = pglab.database()
    try:
        yield database
    finally:
        if not pglab.running:
            pglab.start()
        pglab.drop(database)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def replica_stores(request, tmp_path):
    """Two stores (two connections) on one database, as two MEO replicas
    hold it: one SQLite file, or a fresh PostgreSQL database."""
    from mecorch.kernel.pgstore import PgStore, settings
    from mecorch.kernel.store import Store
    if request.param == "sqlite":
        made = [Store(tmp_path / "meo.db") for _ in range(2)]
    else:
        database = request.getfixturevalue("pgdatabase")
        made = [PgStore(settings(database)) for _ in range(2)]
    yield made
    for s in made:
        s.close()
