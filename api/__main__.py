"""`python -m api`: serve the API with uvicorn on PDS_API_HOST:PDS_API_PORT."""

from __future__ import annotations

import uvicorn

from catalog.settings import Settings


def main() -> None:
    settings = Settings()
    uvicorn.run(
        "api.app:app_from_env",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
