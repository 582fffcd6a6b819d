"""The `pds` console script: it imports nothing before it can take Ctrl-C, so an interrupt at any
moment of a command — its imports, a wait for the API, a push — is one line and exit code 130."""

from __future__ import annotations

import os
import sys


def entry() -> None:
    try:
        from api.cli import main

        code = main()
    except KeyboardInterrupt:
        print("pds: interrupted", file=sys.stderr)
        sys.stderr.flush()
        # At once: an interrupt in the middle of an import can leave a thread the interpreter would
        # wait for at exit, and an interrupted command must end, not hang.
        os._exit(130)
    sys.exit(code)
