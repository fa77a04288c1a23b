"""A command run in a real pseudo-terminal of a given size, and a small terminal emulator that
replays what it printed, so a test can assert what a person would SEE: the final screen, every
line that went past the right edge (the terminal wrapped it), and no line shown twice.

The emulator knows what rich sends to a terminal: text, CR/LF (LF as CR LF, the tty default)/BS, cursor up/down/left/right and
to a column, erase in line/display, colours and cursor visibility (ignored), OSC strings
(ignored). Characters are as wide as rich counts them (rich.cells.cell_len).
"""

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

from rich.cells import cell_len

_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z@`])")
_OSC = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
# Makes the child's standard input its controlling terminal (Popen already made it a session
# leader), so a typed Ctrl-C reaches its whole process group, as in a real terminal.
_TAKE_TTY = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
             "os.execvp(sys.argv[1], sys.argv[1:])")


class Screen:
    """What a terminal ``width`` columns wide shows after the given output."""

    def __init__(self, width: int = 80):
        self.width = width
        self.rows: list[list[str]] = [[]]
        self.row = self.col = 0
        self.wrapped: list[str] = []     # lines the terminal had to wrap (too long for the width)

    def feed(self, text: str) -> "Screen":
        text = _OSC.sub("", text)
        i = 0
        while i < len(text):
            m = _CSI.match(text, i)
            if m:
                self._csi(m.group(1), m.group(2))
                i = m.end()
                continue
            self._char(text[i])
            i += 1
        return self

    def lines(self) -> list[str]:
        return ["".join(r).rstrip() for r in self.rows]

    def _line(self) -> list[str]:
        while len(self.rows) <= self.row:
            self.rows.append([])
        return self.rows[self.row]

    def _char(self, ch: str) -> None:
        if ch == "\r":
            self.col = 0
        elif ch == "\n":       # a terminal's output translation (ONLCR): a new line at column 0
            self.row += 1
            self.col = 0
            self._line()
        elif ch == "\b":
            self.col = max(self.col - 1, 0)
        elif ch == "\x07" or ch == "\x1b" or ord(ch) < 32:
            pass
        else:
            w = max(cell_len(ch), 1)
            if self.col + w > self.width:   # the terminal wraps: the line was too long
                self.wrapped.append("".join(self._line()).rstrip())
                self.row += 1
                self.col = 0
            line = self._line()
            while len(line) < self.col + w:
                line.append(" ")
            line[self.col] = ch
            for k in range(1, w):
                line[self.col + k] = ""
            self.col += w

    def _csi(self, params: str, final: str) -> None:
        if params.startswith("?"):
            return  # cursor visibility and other private modes
        nums = [int(p) if p else 0 for p in params.split(";")] if params else []
        n = nums[0] if nums else 0
        line = self._line()
        if final == "A":
            self.row = max(self.row - max(n, 1), 0)
        elif final == "B":
            self.row += max(n, 1)
            self._line()
        elif final == "C":
            self.col = min(self.col + max(n, 1), self.width - 1)
        elif final == "D":
            self.col = max(self.col - max(n, 1), 0)
        elif final == "G":
            self.col = max(n, 1) - 1
        elif final == "K":
            if n == 0:
                del line[self.col:]
            elif n == 1:
                line[: self.col + 1] = [" "] * min(self.col + 1, len(line))
            else:
                line.clear()
        elif final == "J":
            if n == 2:
                self.rows, self.row, self.col = [[]], 0, 0
            else:
                del line[self.col:]
                del self.rows[self.row + 1:]
        elif final == "H":
            self.row = (nums[0] - 1) if nums and nums[0] else 0
            self.col = (nums[1] - 1) if len(nums) > 1 and nums[1] else 0
            self._line()


class Terminal:
    """``argv`` in a pseudo-terminal ``cols`` x ``rows``; ``read_until`` / ``type`` / ``wait``.
    Always ``close()`` (kills its process group if it is still running)."""

    def __init__(self, argv, cols: int = 80, rows: int = 24, env=None, cwd=None):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = dict(os.environ if env is None else env)
        env.update(TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows))
        for var in ("TTY_COMPATIBLE", "FORCE_COLOR", "NO_COLOR"):
            env.pop(var, None)
        self.proc = subprocess.Popen([sys.executable, "-c", _TAKE_TTY, *argv], stdin=slave,
                                     stdout=slave, stderr=slave, env=env, cwd=cwd,
                                     start_new_session=True, close_fds=True)
        os.close(slave)
        self.output = b""

    def _pump(self, timeout_s: float) -> bool:
        """Read what is there within ``timeout_s``; False once the terminal is closed."""
        ready, _, _ = select.select([self.master], [], [], timeout_s)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every process holding the terminal has exited
            return False
        self.output += data
        return bool(data)

    def read_until(self, predicate, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate(self.text()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.text()}")
            if not self._pump(0.05) and self.proc.poll() is not None:
                raise AssertionError(f"the command ended before {what}:\n{self.text()}")

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout_s: float) -> int:
        """Read until the command exits and its terminal closes; returns its exit code."""
        deadline = time.monotonic() + timeout_s
        while self._pump(0.05):
            if time.monotonic() > deadline:
                raise AssertionError(f"the command did not finish:\n{self.text()}")
            if self.proc.poll() is not None and not select.select([self.master], [], [], 0)[0]:
                break
        return self.proc.wait(timeout=max(deadline - time.monotonic(), 1))

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def screen(self, width: int = 80) -> Screen:
        return Screen(width).feed(self.text())

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait(timeout=30)
        os.close(self.master)


def duplicated(lines) -> list[str]:
    """Non-blank lines that appear more than once."""
    seen, dups = set(), []
    for line in lines:
        if line.strip() and line in seen:
            dups.append(line)
        seen.add(line)
    return dups


__all__ = ["Screen", "Terminal", "duplicated"]
