"""How every ``wsi-hcc`` command reports a library error: one line on stderr and exit status 2."""

from __future__ import annotations

import sys

import click

__all__ = ["OneLineErrors", "OneLineCommand"]

RESUME_HINT = "interrupted; run the same command again to resume from the last checkpoint"


def _invoke(invoke, ctx, interrupt_hint: str | None):
    from wsi_hcc.errors import WsiHccError

    try:
        return invoke(ctx)
    except WsiHccError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        if interrupt_hint is None:
            raise
        click.echo(interrupt_hint, err=True)
        sys.exit(130)


class OneLineErrors(click.Group):
    """The command group: library errors become one line, never a traceback."""

    def invoke(self, ctx):
        return _invoke(super().invoke, ctx, None)


class OneLineCommand(click.Command):
    """A resumable command, also when invoked on its own: one-line errors; an interrupt says how to resume."""

    def invoke(self, ctx):
        return _invoke(super().invoke, ctx, RESUME_HINT)
