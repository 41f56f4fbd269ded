"""SHA-256 of a file (checkpoint manifests and the data-prep resume fingerprint): one name for the two
callers, on the standard library's streaming ``hashlib.file_digest``."""
from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
