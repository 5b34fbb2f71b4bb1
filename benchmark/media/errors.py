"""Why one media file could not be used; recorded per item, never fatal for a run."""

from __future__ import annotations


class MediaError(Exception):
    """A missing, empty, corrupt or stream-less media file. `reason` is a short code for manifests and counts."""

    def __init__(self, path: object, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason  # one of: missing, empty, corrupt, no_stream, too_short, non_finite
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))
