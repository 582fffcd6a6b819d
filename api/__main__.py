"""`python -m api`: serve the API with granian (ASGI, uvloop) on PDS_API_HOST:PDS_API_PORT.

Granian's Rust HTTP layer answers the proxy's small range reads several times faster than uvicorn
with httptools on the same app (README, "The data proxy"); `PDS_API_SERVER=uvicorn` runs uvicorn
instead, for comparison or where granian has no wheel.
"""

from __future__ import annotations

import os

from catalog.settings import Settings


def main() -> None:
    settings = Settings()
    if os.environ.get("PDS_API_SERVER", "granian") == "uvicorn":
        import uvicorn

        uvicorn.run(
            "api.app:app_from_env",
            factory=True,
            host=settings.api_host,
            port=settings.api_port,
            log_level="warning",
            timeout_graceful_shutdown=10,
        )
        return
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    Granian(
        "api.app:app_from_env",
        factory=True,
        address=settings.api_host,
        port=settings.api_port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        log_level=LogLevels.warning,
        workers_kill_timeout=10,
    ).serve()


if __name__ == "__main__":
    main()
