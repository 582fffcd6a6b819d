"""Ports, readiness polling and process lifecycle shared by the test servers.

Every server runs as a local child process (there is no Docker engine here or in CI) in its own
session, so one signal to the process group also reaches whatever workers it forked; output goes to
a log file whose tail ends up in the error message when a server does not come up.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

IS_ROOT = os.geteuid() == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it; small race window).

    Under pytest-xdist each worker keeps to its own share of the ports, so two workers starting servers
    at the same moment never pick the same one (Linux hands out odd ports to bind(0), hence `port >> 1`).
    """
    worker, workers = xdist_worker()
    held: list[socket.socket] = []  # kept bound while searching, so the kernel offers other ports
    try:
        for _ in range(1000):
            s = socket.socket()
            held.append(s)
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            if (port >> 1) % workers == worker:
                return port
        raise RuntimeError(f"no free port for xdist worker {worker} of {workers}")
    finally:
        for s in held:
            s.close()


def xdist_worker() -> tuple[int, int]:
    """(this pytest-xdist worker's index, the number of workers); (0, 1) outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not name.startswith("gw") or count < 2:
        return 0, 1
    return int(name[2:]) % count, count


def tcp_ready(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def self_signed_certificate(cert: Path, key: Path) -> None:
    """A certificate for 127.0.0.1 (name and IP), valid two days; cert and key may be one file."""
    if cert.exists() and key.exists():
        return
    subprocess.run(
        [
            require("openssl", "openssl"),
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )


def require(binary: str, package: str) -> str:
    """The path of `binary` (a name on PATH or an absolute path), or a RuntimeError naming its package.

    Raised rather than skipped: in CI a missing server must fail the run, never hide the tests.
    """
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError(f"{binary} not found: install {package} (infra/test-deps.sh installs the apt ones)")
    return path


def venv_bin(name: str, package: str) -> str:
    """A console script installed next to the running interpreter (the venv's bin/), or a RuntimeError."""
    return require(str(Path(sys.executable).with_name(name)), f"the Python package {package}")


def log_tail(log: Path | None, chars: int = 4000) -> str:
    if log is None or not log.exists():
        return ""
    return log.read_text(errors="replace")[-chars:]


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    log: Path | None = None,
    process: subprocess.Popen[bytes] | None = None,
    interval: float = 0.1,
) -> None:
    """Poll `predicate` until it returns true; exceptions count as "not yet".

    Gives up with a RuntimeError (carrying the log's tail) after `timeout` seconds, or at once when
    `process` has already exited, so a server that crashed on start does not cost the whole timeout.
    """
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            if predicate():
                return
        except Exception as error:  # not ready yet
            last_error = repr(error)
        if process is not None and process.poll() is not None:
            problem = f"{what} exited with status {process.returncode} before it was ready"
            break
        if time.monotonic() >= deadline:
            problem = f"{what} not ready after {timeout:.0f} s (last error: {last_error or 'none'})"
            break
        time.sleep(interval)
    raise RuntimeError(f"{problem}\n--- {log} ---\n{log_tail(log)}" if log else problem)


def spawn(
    command: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `command` in a new session (its own process group) with stdout and stderr appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


def terminate(process: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still there after `grace` seconds."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:  # exited between poll() and killpg()
        process.wait()


class Server:
    """Context-manager support for the server classes: `with Server(...) as s:` starts and stops."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


@contextmanager
def serving(app: object, port: int) -> Iterator[str]:
    """An ASGI app served by uvicorn on the port, in a thread of this process; yields its base URL."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert thread.is_alive(), "uvicorn stopped while starting"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
