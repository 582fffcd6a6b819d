"""What `pds up` needs to own its processes: one instance per data directory, free ports, and children
that cannot outlive it.

- `InstanceLock`: an exclusive `flock` on `<data_dir>/run/pds-up.lock`, held for the life of `pds up`.
  The kernel releases it however the process dies (SIGKILL, OOM killer), so a stale lock never needs
  clearing by hand, and a second `pds up` on the same directory is refused at once.
- `ports_in_use`: a second stack (or anything else) already listening on a port must stop a start
  before anything is started; otherwise the readiness checks would be answered by the other program.
- `Child`: a process in its own process group (so Ctrl-C at the terminal reaches only `pds up`, which
  stops its children in order, and so a whole tree — the API's worker, a worker's flow runs — can be
  killed with one `killpg`), with `PR_SET_PDEATHSIG` so the kernel signals it when `pds up` dies
  without a chance to stop it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: From <linux/prctl.h>.
PR_SET_PDEATHSIG = 1


class AlreadyRunning(Exception):
    """Another `pds up` holds the data directory; `pid` is the one it wrote (0 if unreadable)."""

    def __init__(self, data_dir: Path, pid: int) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"pds is already running on {data_dir} ({who}); stop it first")
        self.pid = pid


class InstanceLock:
    """An exclusive lock on a file, held while the file descriptor is open; it holds our pid for the
    message a second start prints."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, data_dir: Path) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise AlreadyRunning(data_dir, int(holder) if holder.isdigit() else 0) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def port_in_use(host: str, port: int) -> bool:
    """Whether binding `host:port` fails because something listens there (SO_REUSEADDR, as the servers
    bind, so a port in TIME_WAIT counts as free)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def ports_in_use(ports: dict[str, tuple[str, int]]) -> list[str]:
    """The names of the parts whose (host, port) is taken, e.g. ["the API (127.0.0.1:8440)"]."""
    return [f"{name} ({host}:{port})" for name, (host, port) in ports.items() if port and port_in_use(host, port)]


def _die_with_parent(death_signal: int) -> Callable[[], None]:
    """A `preexec_fn` asking the kernel to send `death_signal` to the child when its parent dies.

    libc is loaded here, in the parent: the function runs between fork and exec, where loading a
    library is not safe. The kernel sends the signal when the *thread* that forked the child ends, so
    `pds up` starts every child from its main thread. The parent's pid is checked after the call
    because the parent may have died between the fork and the prctl, and then no signal would come.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


@dataclass
class Child:
    """One supervised process.

    `stop_signal` asks it to finish what it is doing (SIGINT for the long-lived flows, which lets the
    run end Completed); `death_signal` is what the kernel sends if `pds up` dies first.
    """

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    pid_dir: Path
    stop_signal: int = signal.SIGTERM
    death_signal: int = signal.SIGTERM
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    """Wall-clock start (seconds since the epoch), to find its flow runs in Prefect."""
    restarts: int = 0
    next_start: float = 0.0
    """Monotonic time before which a dead child is not started again (backoff)."""
    ready: bool = False

    def start(self) -> None:
        self.kill_group()  # whatever an earlier run left behind (an API worker holding the port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 — our own interpreter and modules
                self.command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
                preexec_fn=_die_with_parent(self.death_signal),  # noqa: PLW1509 — pds up starts children from one thread
            )
        self.started_at = time.time()
        self.ready = False
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        (self.pid_dir / f"{self.name}.pid").write_text(str(self.process.pid))

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_code(self) -> int | None:
        return self.process.poll() if self.process else None

    def ask_to_stop(self) -> None:
        if self.running():
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(self.stop_signal)

    def wait(self, timeout: float) -> bool:
        """Whether it ended within `timeout` seconds."""
        if self.process is None:
            return True
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill_group(self) -> None:
        """SIGKILL the child and everything in its process group (grandchildren it left behind)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def forget(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.pid_dir / f"{self.name}.pid").unlink()
