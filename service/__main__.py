"""``python -m service``: serve the API with uvicorn on the settings' host and port."""

from __future__ import annotations

import uvicorn

from service.config import get_settings
from service.observability import configure_logging


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, json_logs=settings.log_format == "json")
    uvicorn.run(
        "service.main:app",
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep our handlers (JSON lines with request ids)
    )


if __name__ == "__main__":
    main()
