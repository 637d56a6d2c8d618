"""Run the real ``symbolon`` command line: in this process (fast), or in a subprocess as an
operator would (a few tests do, so that the entry point itself stays covered)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import markus.main
from click.testing import CliRunner

from symbolon.admin_cli.commands import cli
from symbolon.conf import Settings
from symbolon.conf.settings import declarations
from tests.environment import OPERATOR_CONFIGURATION

# The settings that point a command at the test's services; their variables' names come from
# the declarations, so a renamed variable cannot leave the tests behind.
CONNECTION_SETTINGS = (
    *("database_url", "redis_url", "redis_store_url", "symbol_urls", "upload_default_url"),
    *("aws_access_key_id", "aws_secret_access_key", "crash_bucket_name", "crash_endpoint_url"),
    *("crash_region", "crash_access_key", "crash_secret_access_key"),
)


def as_variable(value: object) -> str:
    """A setting's value written back as its environment variable would say it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(OPERATOR_CONFIGURATION)}
    declared = declarations()
    env.update(
        {declared[name].env: as_variable(getattr(settings, name)) for name in CONNECTION_SETTINGS}
    )
    env.update(SECRET_KEY="test-secret", LOG_FORMAT="text")
    env.update(extra)
    return env


def symbolon(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "symbolon.admin_cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@dataclass(frozen=True)
class Outcome:
    """What a command left, under the names of ``subprocess.CompletedProcess``."""

    returncode: int
    stdout: str
    stderr: str


def invoke(*args: str, env: dict[str, str]) -> Outcome:
    """``symbolon ARGS`` run in this process, seeing exactly ``env`` as its environment.

    The command runs on a thread of its own: its ``asyncio.run`` must neither meet the test's
    running event loop nor unset the current loop of the test's thread."""
    # Names missing from env are hidden from the command, as from a subprocess given env.
    environ: dict[str, str | None] = {name: None for name in os.environ if name not in env}
    environ.update(env)
    with _process_set_up_kept(), ThreadPoolExecutor(1) as thread:
        result = thread.submit(
            CliRunner().invoke, cli, list(args), env=environ, prog_name="symbolon"
        ).result()
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # A crash shows its traceback, as the interpreter prints it for a subprocess.
        stderr += "".join(traceback.format_exception(result.exception))
    return Outcome(result.exit_code, result.stdout, stderr)


@contextmanager
def _process_set_up_kept() -> Iterator[None]:
    """Undo the logging and metrics set-up a command does for its process: its log handler
    writes to a stream that closes with the command, and pytest's own handlers must stay."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {
        name: logger.level
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    backends = markus.main._metrics_backends
    try:
        yield
    finally:
        markus.main._change_metrics(backends)
        for name, logger in list(logging.Logger.manager.loggerDict.items()):
            if isinstance(logger, logging.Logger):
                logger.setLevel(levels.get(name, logging.NOTSET))  # NOTSET: made meanwhile
        root.handlers[:] = handlers
        root.setLevel(level)
