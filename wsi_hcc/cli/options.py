"""Option spellings shared by every command, and the old spellings kept for one release.

The vocabulary: ``--model PATH`` is always a model folder to load, ``--arch NAME`` the architecture
to build or train, stores are the positional inputs of the commands that read them, ``--workers N``
is always processes and ``--threads N`` always threads, ``--labels CSV`` the slide table and
``--out DIR`` the output folder.
"""

from __future__ import annotations

import functools

import click

from wsi_hcc.errors import ConfigError

__all__ = ["renamed_option", "deprecation", "stores_argument"]


def deprecation(old: str, new: str) -> None:
    click.echo(f"warning: {old} is deprecated and will be removed; use {new}", err=True)


def renamed_option(old: str, new: str, dest: str, **option_kwargs):
    """Keep ``old``, an option's previous spelling, hidden for one release: it prints a one-line
    deprecation and its value goes to the parameter ``dest`` that ``new`` now fills."""
    hidden = f"renamed_{dest}_{old.strip('-').replace('-', '_')}"

    def decorate(command):
        @functools.wraps(command)
        def with_old_spelling(*args, **kwargs):
            value = kwargs.pop(hidden)
            if value not in (None, ()):
                source = click.get_current_context().get_parameter_source(dest)
                if source is click.core.ParameterSource.COMMANDLINE:
                    raise ConfigError(f"{old} and {new} are the same option; give {new} only")
                deprecation(old, new)
                kwargs[dest] = value
            return command(*args, **kwargs)

        return click.option(old, hidden, hidden=True, default=None, **option_kwargs)(with_old_spelling)

    return decorate


def stores_argument(command):
    """Patch stores (or folders of them) as the positional inputs; the old ``--store`` for one release."""
    command = renamed_option("--store", "positional STORES", "stores", multiple=True)(command)
    return click.argument("stores", nargs=-1)(command)


def phantoms_or_cases(phantoms: int | None, cases_csv: str | None, cases_name: str) -> None:
    """A command that learns from phantoms or from your cases takes exactly one of them."""
    if (phantoms is None) == (cases_csv is None):
        raise ConfigError(f"give either --phantoms N (a phantom cohort) or --cases {cases_name} (your cases), not "
                          f"{'both' if phantoms is not None else 'neither'}")
