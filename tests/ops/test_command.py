"""The `pds` command as a shell user meets it: Ctrl-C is one line and exit code 130, never a traceback."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PDS = str(Path(sys.executable).with_name("pds"))


def as_a_shell_starts_it() -> None:
    """A shell starts a foreground command taking Ctrl-C, whatever the test process does with SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_ctrl_c_while_waiting_for_the_api_is_one_line():
    # A server that takes the connection and never answers: the command waits, as on a stuck network.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        command = subprocess.Popen(
            [PDS, "--url", url, "destination", "list"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=as_a_shell_starts_it,
        )
        time.sleep(1.5)
        assert command.poll() is None, command.communicate()
        command.send_signal(signal.SIGINT)
        out, err = command.communicate(timeout=30)
    assert command.returncode == 130
    assert out == "" and err == "pds: interrupted\n"


def test_ctrl_c_while_the_command_starts_shows_no_traceback_of_pds():
    """Interrupted at moments from the interpreter's own start to the request: what pds runs never ends
    in a traceback (Python's start-up itself, before any pds code, is out of its hands)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        for delay in [0.01 * i for i in range(2, 16)]:
            command = subprocess.Popen(
                [PDS, "--url", url, "status", "1"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=as_a_shell_starts_it,
            )
            time.sleep(delay)
            command.send_signal(signal.SIGINT)
            try:
                _, err = command.communicate(timeout=15)
            except subprocess.TimeoutExpired as lost:
                # Python drops a KeyboardInterrupt raised inside one of importlib's callbacks ("Exception
                # ignored"); pds takes Ctrl-C from its first line with a handler that cannot be dropped,
                # so only the interpreter's start-up can lose one, and a second Ctrl-C ends the command.
                assert "Exception ignored" in str(lost.stderr), f"after {delay:.2f} s: {lost.stderr!r}"
                command.send_signal(signal.SIGINT)
                _, err = command.communicate(timeout=30)
                assert command.returncode == 130 and err.endswith("pds: interrupted\n"), err
                continue
            assert "api/" not in err, f"after {delay:.2f} s:\n{err}"
            if command.returncode == 130:
                assert err == "pds: interrupted\n"
