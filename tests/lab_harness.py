"""A throw-away JupyterLab server for tests/test_browser_sliders.py, started through `bash scripts/dev.sh lab`.

Everything the server reads or writes lives in one temporary folder: the served root (a copy of the
notebooks under test), JUPYTER_CONFIG_DIR / JUPYTER_DATA_DIR / JUPYTER_RUNTIME_DIR, and the lab's settings
and workspaces. So the test never sees a user's settings, never reuses a running kernel, and JupyterLab's
autosave can only write into the copy, never into notebooks/.

Settings written for the test:
- no "get notified about Jupyter news?" toast (it would cover the bottom right of screenshots);
- `windowingMode: "none"`: every cell stays in the DOM, so "all prompts show [n]" really means every cell ran.

`stop()` always ends everything it started: it asks the server to shut its kernels down, sends SIGTERM to
the server's process group (SIGKILL after 15 s), then kills any process left whose command line names this
server's runtime folder (a kernel, by its connection file), and nothing else.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEV_SH = REPO / "scripts" / "dev.sh"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jupyter_lab_executable() -> Path:
    """The `jupyter-lab` next to the running interpreter (the venv the tests run in)."""
    return Path(sys.executable).parent / "jupyter-lab"


def clear_outputs(src: Path, dst: Path) -> None:
    """Copy notebook `src` to `dst` without outputs, execution counts or saved widget state.

    The committed notebook holds outputs (plots, saved widget views); clearing them means every image the
    test sees afterwards was drawn by the kernel it started.
    """
    nb = json.loads(src.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    nb.get("metadata", {}).pop("widgets", None)
    dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")


class JupyterLab:
    """`bash scripts/dev.sh lab` on 127.0.0.1 (the port it binds, from a free one on), serving `root`, with a random
    token.

    `root=None` serves what the README's command serves (notebooks/, GRPO_LAB_ROOT unset).
    """

    def __init__(self, workdir: Path, root: Path | None):
        self.workdir = workdir
        self.root = root
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.log_path = workdir / "lab.log"
        self.runtime_dir = workdir / "jupyter-runtime"
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 80) -> str:
        """The last `n` lines of the server's log (for failure messages)."""
        if not self.log_path.exists():
            return "(no lab.log)"
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def _env(self) -> dict[str, str]:
        settings = self.workdir / "lab-settings"
        (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True, exist_ok=True)
        (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True, exist_ok=True)
        (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
            json.dumps({"windowingMode": "none"}))
        env = dict(os.environ)
        env.pop("GRPO_LAB_ROOT", None)
        if self.root is not None:
            env["GRPO_LAB_ROOT"] = str(self.root)
        env.update(
            GRPO_SKIP_SETUP="1",                       # we already run inside the installed venv
            VENV=str(Path(sys.executable).parent.parent),
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(self.workdir / "lab-workspaces"),
            JUPYTER_CONFIG_DIR=str(self.workdir / "jupyter-config"),
            JUPYTER_DATA_DIR=str(self.workdir / "jupyter-data"),
            JUPYTER_RUNTIME_DIR=str(self.runtime_dir),
            WANDB_MODE=os.environ.get("WANDB_MODE", "offline"),
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
        )
        env.pop("MPLBACKEND", None)                      # Agg in the kernel would make every plot vanish
        return env

    def _bound_port(self) -> int | None:
        """The port the server really listens on, from the server file it writes once bound
        (jpserver-<pid>.json in our private runtime folder); None before that."""
        for info in self.runtime_dir.glob("jpserver-*.json"):
            try:
                return int(json.loads(info.read_text(encoding="utf-8"))["port"])
            except (OSError, ValueError, KeyError):
                return None                              # being written: read it on the next poll
        return None

    def start(self, timeout: float = 120.0) -> None:
        """Start the server and wait until /api/status answers; raise with the log if it does not.

        The port: `free_port()` is only a starting point. Another process may take it between our probe and the
        server's bind (ZMQ kernels bind ephemeral ports too), so the server may move on to the next free port
        (port_retries) and we read the port it bound from its server file before polling it.
        """
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            ["bash", str(DEV_SH), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
             "--ServerApp.port_retries=50", f"--IdentityProvider.token={self.token}"],
            cwd=REPO, env=self._env(), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,                      # own process group: stop() kills the whole group
        )
        deadline = time.monotonic() + timeout
        bound = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {self.proc.returncode} before answering "
                                   f"on {self.url}.\n--- lab.log ---\n{self.log_tail()}")
            if bound is None:
                bound = self._bound_port()
                if bound is None:
                    time.sleep(0.25)
                    continue
                self.port = bound
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"JupyterLab did not answer on {self.url} within {timeout:.0f} s.\n"
                           f"--- lab.log ---\n{self.log_tail()}")

    def get(self, path: str) -> str:
        """GET `path` (e.g. "/api/contents") from the server with the token; the body as text."""
        sep = "&" if "?" in path else "?"
        with urllib.request.urlopen(f"{self.url}{path}{sep}token={self.token}", timeout=30) as r:
            return r.read().decode("utf-8")

    def _shutdown_kernels(self) -> None:
        try:
            with urllib.request.urlopen(f"{self.url}/api/kernels?token={self.token}", timeout=5) as r:
                kernels = json.load(r)
            for k in kernels:
                req = urllib.request.Request(f"{self.url}/api/kernels/{k['id']}?token={self.token}",
                                             method="DELETE")
                urllib.request.urlopen(req, timeout=10).close()
        except (urllib.error.URLError, OSError, ValueError):
            pass                                         # the server may already be gone

    def _leftover_pids(self) -> list[int]:
        """Processes whose command line names our runtime folder (kernels started by this server)."""
        proc_dir = Path("/proc")
        if not proc_dir.is_dir():
            return []
        marker = str(self.runtime_dir).encode()
        pids = []
        for p in proc_dir.iterdir():
            if p.name.isdigit() and int(p.name) != os.getpid():
                try:
                    if marker in (p / "cmdline").read_bytes():
                        pids.append(int(p.name))
                except OSError:
                    pass
        return pids

    def stop(self) -> None:
        """Shut kernels down, SIGTERM the server's process group (SIGKILL after 15 s), kill leftovers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._shutdown_kernels()
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        for pid in self._leftover_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None
