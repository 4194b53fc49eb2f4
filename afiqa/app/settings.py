"""The web app's limits, in one object, and its fixed choices (views, zoom levels, theme).

Every limit a public Space needs is here, with the environment variable that changes it
where a host may want to (``AppLimits.from_env``). ``LIMITS`` is the one instance the app
reads at call time, so a test (or a host's own launcher) may change a field before it
serves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from afiqa.runtime.export import EXAMPLES_DIR

MB = 1024 * 1024


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, "") or default)
    except ValueError:
        return default


@dataclass
class AppLimits:
    max_file_mb: int = 25  # one uploaded file; larger uploads are refused with a sentence
    max_compare: int = 12  # images in one comparison
    max_batch: int = 100  # files in one batch; the answer says how many were left out
    model_concurrency: int = 1  # model calls at a time, all tabs together: one call already uses every core
    queue_size: int = 64  # jobs waiting beyond this are refused ("queue is full")
    per_session: int = 8  # jobs one page may have queued or running ("too many requests from you")
    per_client: int = 24  # ... and one client address, all its pages together
    uploads_per_minute: int = 30  # upload requests per client
    cache_max_mb: int = 2048  # uploads are refused while Gradio's upload cache is larger
    trusted_proxies: int = 0  # proxies in front whose X-Forwarded-For is believed (1 on a Hugging Face Space)
    store_mb: int = 256  # pictures kept for re-drawing (another view, the slider, the zoom), all pages together
    cleanup: tuple[int, int] = (300, 900)  # every 5 min, delete cached files older than 15 min
    error_chars: int = 300  # error answers are cut to this many characters
    thumb_side: int = 160  # batch thumbnails, px
    zoom_tile: int = 320  # each version's zoomed crop, px

    @classmethod
    def from_env(cls) -> AppLimits:
        """Defaults, with ``AFIQA_PER_CLIENT``, ``AFIQA_UPLOADS_PER_MINUTE``,
        ``AFIQA_CACHE_MAX_MB`` and ``AFIQA_TRUSTED_PROXIES`` read from the environment."""
        d = cls()
        return cls(per_client=_env_int("AFIQA_PER_CLIENT", d.per_client),
                   uploads_per_minute=_env_int("AFIQA_UPLOADS_PER_MINUTE", d.uploads_per_minute),
                   cache_max_mb=_env_int("AFIQA_CACHE_MAX_MB", d.cache_max_mb),
                   trusted_proxies=_env_int("AFIQA_TRUSTED_PROXIES", d.trusted_proxies))

    @property
    def max_file_size(self) -> str:  # Gradio's spelling
        return f"{self.max_file_mb}mb"

    @property
    def max_file_bytes(self) -> int:
        return self.max_file_mb * MB

    @property
    def max_upload_bytes(self) -> int:
        """One upload request: the browser sends a batch's files in one."""
        return self.max_batch * self.max_file_bytes

    @property
    def max_body_bytes(self) -> int:
        """Any other request: JSON with a base64 data URL of the largest file."""
        return self.max_file_bytes * 4 // 3 + MB

    def refs_for(self, api_name: str | None) -> int:
        """File references a request may carry: twice a tab's limit (past the limit files
        are left out and the answer says so; past twice it the request is refused before
        Gradio parses it). An unknown endpoint gets the largest."""
        return {"score": 1, "compare": 2 * self.max_compare}.get(api_name or "", 2 * self.max_batch)


LIMITS = AppLimits.from_env()

VIEWS = [("lowers / raises quality", "signed"), ("how much each region weighs", "magnitude")]
SHOWS = [("photos", "photo"), ("heat-maps: lowers / raises", "signed"), ("heat-maps: how much", "magnitude")]
ZOOMS = {"2x": 2, "4x": 4, "8x": 8}  # the crop is the picture's shorter side divided by this
EXAMPLE_NAMES = ["coffee.jpg", "coffee_blur.jpg", "coffee_noise.jpg", "coffee_jpeg.jpg",
                 "astronaut.jpg", "chelsea.jpg", "rocket.jpg"]
__all__ = ["LIMITS", "AppLimits", "EXAMPLES_DIR", "MB", "VIEWS", "SHOWS", "ZOOMS", "EXAMPLE_NAMES"]
