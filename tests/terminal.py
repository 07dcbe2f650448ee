"""Run the `saga` command as a person does: on a terminal (a pseudo-terminal the test
reads as a screen) or with its output piped, and press Ctrl-C when something shows."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parent.parent
COLUMNS, ROWS = 160, 60
# What would make Rich draw for a pipe as for a terminal, or not draw on a terminal.
NOT_INHERITED = ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")


@dataclass
class Run:
    code: int
    stdout: str  # on a terminal: everything written to it, control sequences included
    stderr: str  # on a terminal: empty (it went to the same screen)
    interrupted: bool
    tty: bool

    @property
    def plain(self) -> str:
        """stdout without its control sequences (every frame a terminal was sent)."""
        return _CONTROL.sub("", self.stdout)

    @property
    def screen(self) -> str:
        """What the terminal shows at the end (or stdout, for a pipe)."""
        if not self.tty:
            return "\n".join(line.rstrip() for line in self.stdout.rstrip("\n").splitlines())
        return render_screen(self.stdout)


def run_saga(
    args: list[str],
    env: dict[str, str],
    *,
    tty: bool,
    interrupt_when: str | None = None,
    timeout: float = 60,
) -> Run:
    """`saga ARGS`, its output on a terminal or on pipes. With ``interrupt_when``, the
    child gets SIGINT (Ctrl-C) once that text has appeared on its stdout or stderr."""
    env = {k: v for k, v in env.items() if k not in NOT_INHERITED}
    env["TERM"] = "xterm-256color"
    argv = [sys.executable, "-m", "saga", *args]
    # Started where Ctrl-C is ignored (a background job), the child would ignore it too.
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    reset = (lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if ignored else None
    if tty:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, preexec_fn=reset
        )
        os.close(slave)
        names = {master: "stdout"}
    else:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
            preexec_fn=reset,
        )
        assert proc.stdout is not None and proc.stderr is not None
        names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
    got = {"stdout": b"", "stderr": b""}
    interrupted = False
    deadline = time.monotonic() + timeout
    try:
        while names:
            if time.monotonic() > deadline:
                raise AssertionError(f"saga {' '.join(args)} still running after {timeout}s: {got}")
            ready, _, _ = select.select(list(names), [], [], 0.2)
            for fd in ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the terminal's other side is closed
                    chunk = b""
                if not chunk:
                    del names[fd]
                    continue
                got[names[fd]] += chunk
            seen = (got["stdout"] + got["stderr"]).decode(errors="replace")
            if interrupt_when is not None and not interrupted and interrupt_when in seen:
                proc.send_signal(signal.SIGINT)
                interrupted = True
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if tty:
            os.close(master)
    return Run(code, got["stdout"].decode(), got["stderr"].decode(), interrupted, tty)


_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TOKEN = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b[()][0-9A-Za-z]|\r|\n|\x07|[^\x1b\r\n\x07]")


def render_screen(raw: str) -> str:
    """The text a terminal shows after ``raw``: enough of one for Rich's live display
    (cursor up and down, erase in line and display, carriage return, line feed); colours
    and other settings are dropped. Lines without trailing blanks, none after the last
    line written."""
    rows: list[list[str]] = [[]]
    row = col = 0
    for match in _TOKEN.finditer(raw):
        text = match.group(0)
        params, command = match.group(1), match.group(2)
        if command is not None:
            n = int(params) if params.isdigit() else None
            if command == "A":
                row = max(0, row - (n or 1))
            elif command == "B":
                row += n or 1
            elif command == "G":
                col = (n or 1) - 1
            elif command == "K":
                while len(rows) <= row:
                    rows.append([])
                line = rows[row]
                if n == 2:
                    rows[row] = []
                elif n == 1:
                    rows[row] = [" "] * min(col + 1, len(line)) + line[col + 1 :]
                else:
                    del line[col:]
            elif command == "J" and n == 2:
                rows, row, col = [[]], 0, 0
            elif command == "J":
                del rows[row + 1 :]
                del rows[row][col:]
            continue  # colours (m), cursor shown or hidden (?25h/l), ...
        if text == "\r":
            col = 0
        elif text == "\n":
            row += 1
        elif text.startswith("\x1b") or text == "\x07":
            continue
        else:
            while len(rows) <= row:
                rows.append([])
            line = rows[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = text
            else:
                line.append(text)
            col += 1
    lines = ["".join(line).rstrip() for line in rows]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)
