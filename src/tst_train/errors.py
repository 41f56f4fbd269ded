"""User-facing errors: the CLI prints their message on one line and exits with status 2."""
import contextlib
import errno
import os
import re


class UserError(Exception):
    """Bad input from the user (data, config, flags, paths). Its message says what is wrong and how to fix it."""


EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped by a signal after checkpointing; rerun to continue


class Interrupted(Exception):
    """Stopped by a signal after checkpointing (the CLI prints the message and exits 75, EX_TEMPFAIL):
    rerunning the same command continues. ``run``: the run directory's name, when one run stopped."""

    def __init__(self, message: str, run: str | None = None) -> None:
        super().__init__(message, run)  # both in args: the exception crosses from a pool worker by pickle
        self.run = run

    def __str__(self) -> str:
        return self.args[0]


@contextlib.contextmanager
def io_errors(action: str):
    """Turn the ways a write can fail on a user's machine into one-line errors that say what happened.

    Disk full (``ENOSPC``, or torch's ``inline_container`` "file write failed"), a read-only file system, a
    file-size limit, missing permissions — raised as an ``OSError``, inside torch.distributed.checkpoint's
    ``CheckpointException`` (a BaseException) or as safetensors' "I/O error … (os error N)":
    ``UserError("<action>: <reason>")``. Anything else propagates unchanged.
    """
    try:
        yield
    except UserError:
        raise
    except BaseException as e:
        reason = _write_failure(e)
        if reason is None:
            raise
        raise UserError(f"{action}: {reason}") from None


def _write_failure(e: BaseException) -> str | None:
    """What a failed write says about its cause (the reason, with the file when known), else None."""
    if isinstance(e, OSError):
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        return _REASONS.get(e.errno, e.strerror or str(e)) + where
    text = str(e)
    if isinstance(e, RuntimeError) and ("write failed" in text or "No space left" in text
                                        or "enforce fail" in text and "inline_container" in text):
        return "the write failed — is the disk full? (no space left on device)"
    found = re.search(r"I/O error: .*\(os error (\d+)\)", text)  # safetensors' error, from Rust
    if found:
        return _REASONS.get(int(found.group(1)), os.strerror(int(found.group(1))))
    # torch.distributed.checkpoint wraps each rank's failure in a CheckpointException (a BaseException)
    failures = getattr(e, "failures", None) if type(e).__name__ == "CheckpointException" else None
    for wrapped in (failures or {}).values():
        reason = _write_failure(wrapped[0] if isinstance(wrapped, tuple) else wrapped)
        if reason is not None:
            return reason
    return None


_REASONS = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
            errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file too large (a file-size limit, ulimit -f?)"}
