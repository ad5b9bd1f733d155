"""How every ``wsi-hcc`` command reports a library error: one line on stderr and exit status 2."""

from __future__ import annotations

import errno
import sys

import click

__all__ = ["OneLineErrors", "OneLineCommand", "os_error_line", "Terminated", "terminate_as_interrupt"]

RESUME_HINT = "interrupted; run the same command again to resume from the last checkpoint"


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch system's time limit), taken like Ctrl-C: work stops cleanly and resumes."""


def terminate_as_interrupt(ctx: click.Context) -> None:
    """Raise :class:`Terminated` on SIGTERM while the command runs, so a killed batch job cleans up its
    worker processes and says how to resume, as Ctrl-C does; the old handler is back afterwards."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def terminated(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    ctx.call_on_close(lambda: signal.signal(signal.SIGTERM, previous))


# What the system says, and the fix, for the errors a lab meets on its own disks.
_OS_FIXES = {
    errno.ENOSPC: "free space and run the same command again (finished work is kept)",
    errno.EDQUOT: "free space and run the same command again (finished work is kept)",
    errno.EACCES: "choose a folder you may write to, or fix its permissions",
    errno.EPERM: "choose a folder you may write to, or fix its permissions",
    errno.EROFS: "the disk is read-only: choose another --out",
    errno.ELOOP: "a symbolic link points to itself: fix the link or pass the file itself",
    errno.EIO: "the disk or network share failed: check it and run again",
}


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: the file, what happened and the fix."""
    where = f"{exc.filename}: " if exc.filename else ""
    fix = _OS_FIXES.get(exc.errno, "check the path and run again")
    return f"{where}{exc.strerror or exc}; {fix}"


def _invoke(invoke, ctx, interrupt_hint: str | None):
    from wsi_hcc.errors import WsiHccError

    try:
        return invoke(ctx)
    except WsiHccError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # a full disk, a read-only folder: never a traceback
        click.echo(f"error: {os_error_line(exc)}", err=True)
        sys.exit(2)
    except MemoryError:
        click.echo("error: out of memory; close other programs, use a machine with more memory, or process fewer "
                   "slides at once (--workers 1)", err=True)
        sys.exit(2)
    except KeyboardInterrupt as interrupt:
        if interrupt_hint is None:
            raise
        terminated = isinstance(interrupt, Terminated)
        click.echo(interrupt_hint.replace("interrupted", "terminated") if terminated else interrupt_hint, err=True)
        sys.exit(143 if terminated else 130)


class OneLineErrors(click.Group):
    """The command group: library errors become one line, never a traceback."""

    def invoke(self, ctx):
        return _invoke(super().invoke, ctx, None)


class OneLineCommand(click.Command):
    """A resumable command, also when invoked on its own: one-line errors; an interrupt says how to resume."""

    def invoke(self, ctx):
        return _invoke(super().invoke, ctx, RESUME_HINT)
