"""How ``infoflow app`` starts Streamlit: the command line and environment of the subprocess."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from infoflow.experiments.threads import THREADS_VARIABLE

ENTRY_SCRIPT = Path(__file__).resolve().parent / "main.py"


def streamlit_command(
    store: Path | None, port: int, host: str, threads: int | None = None
) -> tuple[list[str], dict[str, str]]:
    """``python -m streamlit run main.py`` on ``host:port`` (headless, no usage statistics, no file watcher:
    it would import every lazy module of transformers) and its environment (``$INFOFLOW_STORE`` set to
    ``store`` and ``$INFOFLOW_THREADS`` to ``threads`` when given)."""
    command = [
        sys.executable, "-m", "streamlit", "run", str(ENTRY_SCRIPT),
        "--server.port", str(port), "--server.address", host, "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal",
    ]  # fmt: skip
    env = dict(os.environ)
    if store is not None:
        env["INFOFLOW_STORE"] = str(Path(store).expanduser().resolve())
    if threads is not None:
        env[THREADS_VARIABLE] = str(threads)
    return command, env
