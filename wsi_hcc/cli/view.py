"""``wsi-hcc view``: serve a classify output folder (or one slide) to the local browser.

Heavy imports (uvicorn, starlette, numpy) happen inside the command so ``--help`` stays instant.
"""

from __future__ import annotations

import click

from wsi_hcc.cli.errors import OneLineCommand

__all__ = ["COMMANDS", "view", "LOCAL_HOST"]

LOCAL_HOST = "127.0.0.1"


@click.command(cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc view results/                      # the --out folder of wsi-hcc classify
  wsi-hcc view wsi-hcc-demo/classify --port 8100
  wsi-hcc view slide.svs                     # a slide alone, without results

\b
Open the address it prints. The list shows predictions.csv (click a column to sort); a slide
opens at full resolution on demand, with per-tile overlays (class probabilities, attention, top
class, tumour regions, tissue mask), a scale bar and the cursor's level-0 position. Read-only;
it listens on 127.0.0.1 (this computer only) unless --host is given, and serves no file outside
the folder it is given. Ctrl+C stops it.""")
@click.argument("path", type=click.Path(exists=True))
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port.")
@click.option("--host", default=LOCAL_HOST, show_default=True,
              help="Address to listen on; 0.0.0.0 shows the results to every computer that can reach this one.")
def view(path, port, host):
    """Look at slides and their results in the browser, zoomable to full resolution."""
    import uvicorn

    from wsi_hcc.utils.words import counted
    from wsi_hcc.view import create_app, load_catalog

    catalog = load_catalog(path)
    listener = listen(host, port)  # bound before the address is printed, so the address printed is ours
    port = listener.getsockname()[1]
    if host != LOCAL_HOST:
        click.echo(f"warning: listening on {host}: anyone who can reach this computer can see these slides", err=True)
    click.echo(f"{counted(len(catalog.entries), 'slide')} from {path}: open http://{_shown(host)}:{port}/  "
               "(Ctrl+C stops)")
    # Only local names in the Host header on 127.0.0.1 (no DNS rebinding); any once the user opens it up.
    app = create_app(catalog) if host == LOCAL_HOST else create_app(catalog, allowed_hosts=("*",))
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listener])


def listen(host: str, port: int):
    """A socket bound to ``host:port`` (0: a free port); a port in use is one line naming the fix."""
    import socket

    from wsi_hcc.errors import WsiHccError

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port left in TIME_WAIT, not one in use
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = f"another program listens there: pass another --port (e.g. --port {port + 1 if port else 8001})"
        raise WsiHccError(f"cannot listen on {host}:{port} ({exc.strerror}); {hint}") from None
    return sock


def _shown(host: str) -> str:
    return LOCAL_HOST if host in ("0.0.0.0", "::", "") else host


COMMANDS = [view]
