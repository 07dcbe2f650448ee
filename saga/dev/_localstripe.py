"""localstripe, the local Stripe API fake, as a child process (dev stack and tests).

localstripe keeps its objects in memory and also pickles them to the fixed path
``/tmp/localstripe.pickle`` after every write; ``from_scratch`` (the default) starts
empty instead of loading that file, which every localstripe on the host shares.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from saga._errors import SagaError
from saga.dev._devserver import _venv_binary, stop_process


class _NotYet(Exception):
    """localstripe is starting and does not answer yet."""


class LocalStripe:
    """``localstripe --port P`` from the venv's bin directory."""

    def __init__(
        self, port: int, *, from_scratch: bool = True, log_file: Path | None = None
    ) -> None:
        self.port = port
        self.from_scratch = from_scratch
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The API base address to give the Stripe SDK (``Settings.stripe_api_base``)."""
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        args = [_venv_binary("localstripe"), "--port", str(self.port)]
        if self.from_scratch:
            args.append("--from-scratch")
        if self.log_file is None:
            return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with self.log_file.open("ab") as log:
            return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    async def start(self, startup_seconds: float = 30) -> None:
        """Start it and wait until it answers HTTP."""
        self.process = process = self._spawn()
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(startup_seconds),
            wait=wait_fixed(0.1),
            retry=retry_if_exception_type(_NotYet),
            reraise=True,
        ):
            with attempt:
                if process.poll() is not None:
                    raise SagaError(
                        f"localstripe exited with code {process.returncode}; "
                        f"is port {self.port} free?"
                    )
                self._probe()

    def _probe(self) -> None:
        """One HTTP round trip: any answer (401 without a key) means it is serving."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"GET /v1/balance HTTP/1.0\r\nHost: localhost\r\n\r\n")
                if not sock.recv(12).startswith(b"HTTP/"):
                    raise _NotYet("no HTTP answer")
        except OSError as exc:
            raise _NotYet(str(exc)) from exc

    def stop(self) -> None:
        stop_process(self.process)


URL_FILE = "localstripe.url"
"""In the data directory while `saga dev` runs its localstripe: its address, so that the
command line (which turns card numbers into payment methods before a saga starts) talks
to the same localstripe as the worker."""


def publish_url(data_dir: Path, url: str) -> None:
    (data_dir / URL_FILE).write_text(url + "\n", encoding="utf-8")


def unpublish_url(data_dir: Path, url: str) -> None:
    if published_url(data_dir) == url:
        (data_dir / URL_FILE).unlink(missing_ok=True)


def published_url(data_dir: Path) -> str | None:
    """The address of the localstripe that `saga dev` runs for ``data_dir``, if any."""
    try:
        return (data_dir / URL_FILE).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
