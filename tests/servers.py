"""Throw-away Redis, Redis Cluster and PostgreSQL servers for the tests that need real ones.

Each server runs from the machine's own binaries, in a temporary directory, on a free
loopback port, and is torn down (processes stopped, directory removed) when its fixture
ends. A missing binary skips the test with the reason (with `CI=true`, conftest turns that
skip into a failure). The server objects can also `stop()` and `start()` again on the same
port, for the fault tests.

Import the fixtures into a test module explicitly (the functions carry a `_fixture`
suffix so that the parameter named after a fixture does not shadow an import):

```python
from servers import postgres_server_fixture, redis_server_fixture  # noqa: F401
```
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = [
    "PostgresServer",
    "RedisCluster",
    "RedisSentinel",
    "RedisServer",
    "free_port",
    "postgres_server_fixture",
    "redis_cluster_fixture",
    "redis_server_fixture",
    "running_postgres",
    "running_redis",
    "running_redis_cluster",
    "running_redis_sentinel",
]

START_TIMEOUT = 20.0  # seconds a server may take to accept connections
CLUSTER_BUS_OFFSET = 10_000  # Redis Cluster nodes also listen on port + 10000
PG_BIN_DIRS = (
    "/usr/local/bin",
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
)


def free_port(*, bus: bool = False) -> int:
    """A loopback TCP port nothing listens on (with `bus`, port + 10000 is free too)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if not bus:
            return port
        if port + CLUSTER_BUS_OFFSET < 65536:
            with socket.socket() as probe, contextlib.suppress(OSError):
                probe.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))
                return port
    raise RuntimeError("no free loopback port found")


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} at start")
        with socket.socket() as probe:
            probe.settimeout(0.2)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not accept connections within {START_TIMEOUT:g}s")


def _require(binary: str, *, dirs: tuple[str, ...] = ()) -> str:
    found = shutil.which(binary)
    for directory in dirs:
        if found is None and os.access(os.path.join(directory, binary), os.X_OK):
            found = os.path.join(directory, binary)
    if found is None:
        pytest.skip(f"{binary} not found on PATH: install it to run the tests against it")
    return found


class RedisServer:
    """One `redis-server` on 127.0.0.1:`port`, without persistence unless `durable`: then
    every write is in the append-only file (fsync always) before Redis acknowledges it, so
    what was acknowledged survives a SIGKILL and a restart."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        cluster: bool = False,
        durable: bool = False,
        extra: tuple[str, ...] = (),
        binary: str = "redis-server",
        node_timeout: int = 2000,  # milliseconds, Redis Cluster's cluster-node-timeout
    ) -> None:
        self.binary = binary if os.path.isabs(binary) else _require(binary)
        self.extra = extra
        self.directory = directory
        self.cluster = cluster
        self.node_timeout = node_timeout
        self.durable = durable
        self.port = port if port is not None else free_port(bus=cluster)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it accepts connections."""
        if self.process is not None:
            return
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.durable else "no",
            "--appendfsync",
            "always",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.directory / f"redis-{self.port}.log"),
        ]
        args += self.extra
        if self.cluster:
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                str(self.node_timeout),
                "--cluster-config-file",
                str(self.directory / f"nodes-{self.port}.conf"),
            ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_for_port(self.port, self.process, f"redis-server on port {self.port}")
        except BaseException:
            self.stop()
            raise

    def stop(self, *, kill: bool = True) -> None:
        """Stop the server: SIGKILL (a crash, the default) or SIGTERM (a clean shutdown)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()

    def cli(self, *args: str) -> str:
        """Run `redis-cli` against this server; returns its output."""
        cli = _require("redis-cli")
        result = subprocess.run(
            [cli, "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            check=True,
            timeout=30,
        )
        return result.stdout.decode()


class RedisCluster:
    """Redis Cluster masters (three by default) covering all 16384 slots, each with
    `replicas` replicas (none by default).

    With replicas, `kill_master` SIGKILLs the master of a slot and `wait_promoted` waits for
    one of its replicas to take over its slots; `restart` brings a killed node back (it
    rejoins as a replica of the promoted one: restart it only after the promotion, since a
    master without persistence that comes back first serves its slots empty). A master is
    taken for failed after `node_timeout` milliseconds without an answer.
    """

    def __init__(
        self,
        directory: Path,
        *,
        masters: int = 3,
        replicas: int = 0,
        node_timeout: int = 2000,  # milliseconds
    ) -> None:
        self.replicas = replicas
        self._masters_before: set[int] = set()
        self.nodes = [
            RedisServer(directory, cluster=True, node_timeout=node_timeout)
            for _ in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        """The URL coatcheck's `from_url` takes: any one node, the client finds the rest."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = _require("redis-cli")
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses]
            + ["--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True,
            check=True,
            timeout=60,
        )
        self.wait_healthy()

    def wait_healthy(self, bound: float = START_TIMEOUT) -> float:
        """Wait until every running node says the cluster is ok and every running replica
        is in sync with its master; the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < bound:
            running = self._running()
            if self._all_ok(running):
                infos = [node.cli("info", "replication") for node in running]
                if all("role:master" in i or "master_link_status:up" in i for i in infos):
                    return time.monotonic() - start
            time.sleep(0.05)
        raise RuntimeError(f"Redis Cluster not ok within {bound:g}s")

    def _running(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None]

    @staticmethod
    def _all_ok(running: list[RedisServer]) -> bool:
        return all("cluster_state:ok" in node.cli("cluster", "info") for node in running)

    def topology(self) -> dict[int, list[int]]:
        """{master port: [its replicas' ports]} as a running node sees the cluster now
        (failed masters left out)."""
        node = self._running()[0]
        ids: dict[str, int] = {}
        masters: list[str] = []
        of: dict[str, str] = {}
        for line in node.cli("cluster", "nodes").splitlines():
            fields = line.split()
            if len(fields) < 8:
                continue
            ids[fields[0]] = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            flags = fields[2].split(",")
            if "fail" in flags or "fail?" in flags:
                continue
            if "master" in flags and len(fields) > 8:  # a master serving slots
                masters.append(fields[0])
            elif "slave" in flags:
                of[fields[0]] = fields[3]
        return {ids[m]: sorted(ids[r] for r, master in of.items() if master == m) for m in masters}

    def serves(self, port: int, slot: int) -> bool:
        """Whether the node on `port` serves `slot`, as it says itself."""
        for line in self.node(port).cli("cluster", "nodes").splitlines():
            fields = line.split()
            if len(fields) > 8 and "myself" in fields[2]:
                for part in fields[8:]:
                    low, _, high = part.partition("-")
                    if low.isdigit() and int(low) <= slot <= int(high or low):
                        return True
        return False

    def master_of(self, port: int) -> int | None:
        """The master port of the node on `port` (itself if a master), None if unknown."""
        for master, replicas in self.topology().items():
            if port == master or port in replicas:
                return master
        return None

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def kill_master(self, port: int) -> RedisServer:
        """SIGKILL the master on `port` (a crash: no data is saved); returns it, stopped."""
        self._masters_before = set(self.topology())
        server = self.node(port)
        server.stop()
        return server

    def wait_promoted(self, killed: int, bound: float = START_TIMEOUT) -> int:
        """Wait until a replica of the master that was on `killed` serves its slots and the
        cluster is ok again; the new master's port."""
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            try:
                masters = self.topology()
                ok = self._all_ok(self._running())
            except subprocess.SubprocessError:
                masters, ok = {}, False
            promoted = set(masters) - self._masters_before
            if ok and killed not in masters and promoted:
                return promoted.pop()
            time.sleep(0.05)
        raise RuntimeError(f"no replica of port {killed} promoted within {bound:g}s")

    def restart(self, server: RedisServer) -> None:
        """Start a killed node again; it rejoins the cluster (as a replica, if its slots were
        taken over meanwhile)."""
        server.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class RedisSentinel:
    """A Sentinel-managed Redis: a master, `replicas` replicas of it and `sentinels`
    sentinels (quorum 2) watching it as service `SERVICE`, all on free loopback ports.

    A sentinel takes the master for down after `DOWN_AFTER_MS` without an answer, so a
    failover after a SIGKILL of the master (`kill_master`) takes a few seconds.
    """

    SERVICE = "coatcheck"
    DOWN_AFTER_MS = 1000

    def __init__(self, directory: Path, *, replicas: int = 1, sentinels: int = 3) -> None:
        self.directory = directory
        self.master = RedisServer(directory)
        self.replicas = [
            RedisServer(directory, extra=("--replicaof", "127.0.0.1", str(self.master.port)))
            for _ in range(replicas)
        ]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """The URL coatcheck's `from_url` takes: every sentinel, the service, db 0."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.SERVICE}/0"

    @property
    def servers(self) -> list[RedisServer]:
        return [self.master, *self.replicas]

    def start(self) -> None:
        for server in self.servers:
            server.start()
        binary = _require("redis-server")
        for port in self.sentinel_ports:
            config = self.directory / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"logfile {self.directory / f'sentinel-{port}.log'}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} {self.DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {self.SERVICE} 10000\n"
                f"sentinel parallel-syncs {self.SERVICE} 1\n"
            )
            process = subprocess.Popen(
                [binary, str(config), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            self.sentinels.append(process)
            _wait_for_port(port, process, f"redis-sentinel on port {port}")
        # Ready once every replica is in sync and every sentinel sees every other one.
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            synced = all(
                "master_link_status:up" in replica.cli("info", "replication")
                for replica in self.replicas
            )
            if synced and all(
                self.sentinel_cli(port, "sentinel", "master", self.SERVICE).count("\n") > 0
                and self._others(port) >= len(self.sentinel_ports) - 1
                for port in self.sentinel_ports
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(f"Redis Sentinel not ready within {START_TIMEOUT:g}s")

    def _others(self, port: int) -> int:
        lines = self.sentinel_cli(port, "sentinel", "master", self.SERVICE).split("\n")
        for name, value in zip(lines, lines[1:], strict=False):
            if name == "num-other-sentinels":
                return int(value)
        return 0

    def sentinel_cli(self, port: int, *args: str) -> str:
        cli = _require("redis-cli")
        result = subprocess.run(
            [cli, "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True,
            check=True,
            timeout=30,
        )
        return result.stdout.decode()

    def master_port(self) -> int:
        """The master's port as the first sentinel now reports it."""
        reply = self.sentinel_cli(
            self.sentinel_ports[0], "sentinel", "get-master-addr-by-name", self.SERVICE
        )
        return int(reply.split()[1])

    def kill_master(self) -> RedisServer:
        """SIGKILL the current master (as the sentinels know it); returns it, stopped."""
        port = self.master_port()
        server = next(server for server in self.servers if server.port == port)
        server.stop()
        return server

    def stop(self) -> None:
        for process in self.sentinels:
            process.kill()
            process.wait(timeout=10)
            if process.stderr is not None:
                process.stderr.close()
        self.sentinels = []
        for server in self.servers:
            server.stop()


class PostgresServer:
    """A PostgreSQL cluster made by `initdb`, run by `pg_ctl` on 127.0.0.1:`port`, with
    trust authentication and its unix socket in its own directory.

    PostgreSQL refuses to run as root; as root the binaries run as the `postgres` user
    (through `runuser`) on a directory owned by that user.
    """

    def __init__(self, directory: Path) -> None:
        self.initdb = _require("initdb", dirs=PG_BIN_DIRS)
        self.pg_ctl = _require("pg_ctl", dirs=PG_BIN_DIRS)
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            runuser = _require("runuser")
            try:
                import pwd

                account = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL")
            os.chown(directory, account.pw_uid, account.pw_gid)
            self.prefix = [runuser, "-u", "postgres", "--"]
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.running = False
        self._run(
            self.initdb,
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self.prefix, *args],
            capture_output=True,
            check=True,
            timeout=120,
            cwd=self.directory,
        )

    def start(self) -> None:
        if self.running:
            return
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=100 -c shared_buffers=16MB"
        )
        self._run(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.directory / "postgres.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        self.running = True

    def stop(self) -> None:
        """Stop in fast mode: open connections are cut, as when a server goes down."""
        if not self.running:
            return
        self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        self.running = False


@contextlib.contextmanager
def _tempdir(name: str) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix=f"coatcheck-{name}-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def running_redis(*, durable: bool = False) -> Iterator[RedisServer]:
    """A fresh single Redis server for the duration of the block."""
    with _tempdir("redis") as directory:
        server = RedisServer(directory, durable=durable)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def running_redis_cluster(*, replicas: int = 0, node_timeout: int = 2000) -> Iterator[RedisCluster]:
    """A fresh three-master Redis Cluster (each master with `replicas` replicas) for the
    duration of the block; `node_timeout` in milliseconds."""
    with _tempdir("redis-cluster") as directory:
        cluster = RedisCluster(directory, replicas=replicas, node_timeout=node_timeout)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


@contextlib.contextmanager
def running_redis_sentinel(*, replicas: int = 1) -> Iterator[RedisSentinel]:
    """A fresh master, `replicas` replicas and three sentinels for the duration of the block."""
    with _tempdir("redis-sentinel") as directory:
        group = RedisSentinel(directory, replicas=replicas)
        try:
            group.start()
            yield group
        finally:
            group.stop()


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster for the duration of the block."""
    with _tempdir("postgres") as directory:
        server = PostgresServer(directory)
        try:
            server.start()
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session", name="redis_server")
def redis_server_fixture() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(scope="session", name="redis_cluster")
def redis_cluster_fixture() -> Iterator[RedisCluster]:
    with running_redis_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session", name="postgres_server")
def postgres_server_fixture() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server
