"""User-facing errors: the CLI prints their message on one line and exits with status 2."""
import contextlib
import errno


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

    Disk full (``ENOSPC``, or torch's ``inline_container`` "file write failed"), a read-only file system,
    missing permissions: ``UserError("<action>: <reason>")``. Anything else propagates unchanged.
    """
    try:
        yield
    except UserError:
        raise
    except OSError as e:
        reason = _REASONS.get(e.errno, e.strerror or str(e))
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        raise UserError(f"{action}: {reason}{where}") from None
    except RuntimeError as e:
        text = str(e)
        if "write failed" in text or "No space left" in text or "enforce fail" in text and "inline_container" in text:
            raise UserError(f"{action}: the write failed — is the disk full? (no space left on device)") from None
        raise
    except BaseException as e:
        # torch.distributed.checkpoint wraps each rank's failure in a CheckpointException (a BaseException)
        failures = getattr(e, "failures", None) if type(e).__name__ == "CheckpointException" else None
        for wrapped in (failures or {}).values():
            inner = wrapped[0] if isinstance(wrapped, tuple) else wrapped
            if isinstance(inner, OSError):
                reason = _REASONS.get(inner.errno, inner.strerror or str(inner))
                raise UserError(f"{action}: {reason}") from None
        raise


_REASONS = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
            errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded"}
