"""SHA-256 of a file, read in 1 MiB blocks (checkpoint manifests and the data-prep resume fingerprint).

``hashlib.file_digest`` would do this, but it needs Python 3.11 and we support 3.10.
"""
from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
