"""The `pds` console script: it imports nothing before it can take Ctrl-C, so an interrupt at any
moment of a command — its imports, a wait for the API, a push — is one line and exit code 130."""

from __future__ import annotations

import sys


def entry() -> None:
    try:
        from api.cli import main

        code = main()
    except KeyboardInterrupt:
        print("pds: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
