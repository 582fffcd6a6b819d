"""The `pds` console script: it takes Ctrl-C before it imports anything, so an interrupt at any moment
of a command — its imports, a wait for the API, a push — is one line and exit code 130."""

from __future__ import annotations

import _signal  # the C module, ready at once: `signal` builds its enums first, a window Ctrl-C hit
import os
import sys


def _interrupted(signum: int, frame: object) -> None:
    # Exit from the handler itself rather than raise KeyboardInterrupt: raised while an import runs one
    # of importlib's weakref callbacks, the interpreter prints "Exception ignored" and drops it, and the
    # command went on as if Ctrl-C had not been pressed (then waited on the API for minutes). Nothing a
    # command does needs unwinding: the API and the databases see a closed connection either way.
    os.write(2, b"pds: interrupted\n")
    os._exit(130)


def entry() -> None:
    _signal.signal(_signal.SIGINT, _interrupted)  # `pds up` puts its own in place once it supervises
    try:
        from api.cli import main

        code = main()
    except KeyboardInterrupt:  # raised by code that put Python's default handler back
        print("pds: interrupted", file=sys.stderr)
        sys.stderr.flush()
        # At once: an interrupt in the middle of an import can leave a thread the interpreter would
        # wait for at exit, and an interrupted command must end, not hang.
        os._exit(130)
    sys.exit(code)
