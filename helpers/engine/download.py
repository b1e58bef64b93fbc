"""Downloads for the online path: checksummed, with progress bars, failing fast offline."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["OfflineError", "host_reachable", "require_host", "fetch", "cache_root"]


class OfflineError(RuntimeError):
    """Raised when something must be downloaded but its host cannot be reached."""


def cache_root() -> Path:
    """Where downloads go (``CLIP_COURSE_CACHE``, else ``~/.cache/clip-course``)."""
    return Path(os.environ.get("CLIP_COURSE_CACHE", Path.home() / ".cache" / "clip-course"))


def host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """True when a TCP connection to ``host`` opens within ``timeout`` seconds (DNS included,
    bounded by running the probe in a thread)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])


def require_host(url: str, what: str, hint: str = "") -> None:
    """Raise :class:`OfflineError` quickly if the host of ``url`` is unreachable (probed on the
    URL's port: the one it names, else 80 for ``http`` and 443 otherwise)."""
    parts = urlparse(url)
    host = parts.hostname or url
    port = parts.port or (80 if parts.scheme == "http" else 443)
    if os.environ.get("CLIP_COURSE_OFFLINE") == "1" or not host_reachable(host, port=port):
        msg = f"Cannot download {what}: {host} is unreachable (no network?)."
        raise OfflineError(msg + (" " + hint if hint else ""))


def fetch(url: str, sha256: str | None, *, what: str, fname: str | None = None, folder: str = "",
          hint: str = "", processor=None):
    """Download ``url`` once into the cache with pooch (hash-checked, progress bar).

    Returns pooch's result (a path, or the processor's output such as the list of extracted
    files). A file already in the cache with the right hash is used without any network.
    pooch writes to a temporary file and moves it into place, so an interrupted download
    leaves nothing behind.

    ``sha256=None`` is for files whose publishers give no checksum: the first download records
    the file's SHA-256 next to it (``<fname>.sha256``, printed too) and every later use checks
    the file against that record, so a corrupted or replaced file is caught. Pass the printed
    value as ``sha256`` to pin it.
    """
    import pooch

    path = cache_root() / folder
    fname = fname or os.path.basename(urlparse(url).path)
    target = path / fname
    record = path / (fname + ".sha256")
    if sha256 is None and record.exists():
        sha256 = record.read_text().split()[0]
    known = f"sha256:{sha256}" if sha256 else None
    if target.exists() and sha256 is not None and pooch.file_hash(str(target)) == sha256:
        # cached and verified: hash it once, here, rather than again inside pooch
        return processor(str(target), "fetch", None) if processor is not None else str(target)
    if not (target.exists() and sha256 is None):
        require_host(url, what, hint)  # missing or not matching its checksum: pooch downloads again
    result = pooch.retrieve(url, known_hash=known, fname=fname, path=path, progressbar=True,
                            processor=processor)
    if sha256 is None and target.exists():
        digest = pooch.file_hash(str(target))
        record.write_text(f"{digest}  {fname}\n")
        print(f"{what}: no published checksum; recorded sha256 {digest} in {record}")
    return result
