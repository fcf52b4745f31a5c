"""The JupyterLab the browser test starts (tests/lab_harness.py) finds its port safely.

`free_port()` probes a port and releases it; between that and the server's bind another process (a ZMQ
kernel binding an ephemeral port, another test's server) may take it. The harness then lets the server move on
(port_retries) and reads the port it really bound from its server file. Here the probed port is held by a
listening socket of our own for the whole start, so the race is certain, not left to chance.
"""

from __future__ import annotations

import socket

import pytest

import lab_harness

pytestmark = pytest.mark.browser


def test_a_taken_port_makes_the_server_move_on_and_the_harness_follows_it(tmp_path, monkeypatch):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hold:
        hold.bind(("127.0.0.1", 0))
        hold.listen()
        taken = hold.getsockname()[1]
        monkeypatch.setattr(lab_harness, "free_port", lambda: taken)
        server = lab_harness.JupyterLab(tmp_path, root=None)
        assert server.port == taken
        try:
            server.start(timeout=90)
            assert server.port != taken                      # the port in the server file, not the probe
            assert server.url == f"http://127.0.0.1:{server.port}"
            assert '"started"' in server.get("/api/status")  # and the token works there
        finally:
            server.stop()
