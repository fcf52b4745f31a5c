"""Minimal reproduction of nbclient waiting a whole cell timeout for a reply that already arrived.

A cell that displays into an `ipywidgets.Output` widget (`with out: print(...)`) is executed CELLS times by
nbclient with a short per-cell TIMEOUT. nbclient mimics the Output widget of a browser: for each captured
output it sends a `comm_msg` back to the kernel on the shell socket (nbclient/output_widget.py,
`OutputWidget.sync_state`). jupyter_client's `Session.send` writes through a *blocking shadow* of the asyncio
socket, while another task of nbclient awaits the cell's `execute_reply` on that same socket
(`await shell_channel.get_msg(timeout)`: a `zmq.asyncio` poll that waits for the socket's file descriptor to
become readable). When the reply has just arrived, the send processes the socket's pending commands and
consumes the descriptor's edge-triggered wake-up; asyncio is never woken, and the poll returns only when its
timeout fires (then `poll(0)` finds the reply and the cell passes). So a stalled cell takes exactly TIMEOUT
seconds, and the notebook still passes: under nbmake (per-cell timeout 900 s) that is a 15-minute pause.

    python scripts/repro_nbclient_stall.py 300 5                # Output widget: several cells take 5.0 s
    python scripts/repro_nbclient_stall.py 300 5 --control      # a slider, no Output capture: none do
    python scripts/repro_nbclient_stall.py 100 5 --setup "%matplotlib inline" \
        --cell "from grpo_lib.course.widgets import epsilon_slider; epsilon_slider()"   # notebook 04's slider

Needs only nbclient, ipykernel and ipywidgets (no part of this project unless --cell imports it). Prints
one line: how many cells passed only after the whole TIMEOUT. Measured with nbclient 0.11.0, jupyter_client 8.10.0,
pyzmq 27.3.0, ipykernel 6.31.0, ipywidgets 8.1.9 (docs/performance.md, "Why notebook 04 stalled").
"""
from __future__ import annotations

import argparse
import sys
import time

import nbformat
from nbclient import NotebookClient

OUTPUT_WIDGET = "out = w.Output(); display(out)\nwith out:\n    print('x')"
CONTROL = "s = w.IntSlider(); display(s)\nprint('x')"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cells", type=int, help="how many identical cells to execute")
    ap.add_argument("timeout", type=float, help="nbclient's per-cell timeout, seconds")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--control", action="store_true", help="a widget without Output capture")
    group.add_argument("--cell", help="the code of each cell (instead of the Output-widget cell)")
    ap.add_argument("--setup", default="", help="code run once in a first cell (e.g. '%%matplotlib inline')")
    args = ap.parse_args(argv)

    body = args.cell or (CONTROL if args.control else OUTPUT_WIDGET)
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("import ipywidgets as w\nfrom IPython.display import display\n" + args.setup))
    nb.cells += [nbformat.v4.new_code_cell(body) for _ in range(args.cells)]
    starts: dict[int, float] = {}
    took: list[float] = []

    def on_start(cell, cell_index, **_):
        starts[cell_index] = time.monotonic()

    def on_done(cell, cell_index, execute_reply, **_):
        if cell_index > 0:
            took.append(time.monotonic() - starts[cell_index])

    t0 = time.monotonic()
    NotebookClient(nb, timeout=args.timeout, on_cell_start=on_start, on_cell_executed=on_done).execute()
    # a cell that really ran longer than the timeout fails (CellTimeoutError); one that passed after the whole
    # timeout was waiting for a reply that had already arrived
    stalled = [t for t in took if t >= args.timeout]
    took.sort()
    print(f"{len(took)} cells, timeout {args.timeout:g} s: {len(stalled)} passed after the whole timeout "
          f"({', '.join(f'{t:.2f} s' for t in stalled) or 'none'}); median {1000 * took[len(took) // 2]:.0f} ms, "
          f"slowest other {max([t for t in took if t < args.timeout], default=0):.2f} s; "
          f"total {time.monotonic() - t0:.1f} s", flush=True)
    return 1 if stalled else 0


if __name__ == "__main__":
    sys.exit(main())
