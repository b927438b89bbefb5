"""Start and stop the platform's processes, each in its own process group, tracked by pid files."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """Distinct free ports; all sockets stay open until every port is picked, so none repeats."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_is_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


@dataclass
class ManagedProcess:
    """One long-running program of the platform; its pid file lets another process stop it."""

    name: str
    argv: list[str]
    run_dir: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "pids" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "logs" / f"{self.name}.log"

    def start(self) -> int:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})},
                cwd=self.cwd,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n{self.argv[0]}\n")
        self.popen = proc
        return proc.pid

    def running_pid(self) -> int | None:
        if self.popen is not None:
            # Started by this process: the Popen handle knows for sure.
            return self.popen.pid if self.popen.poll() is None else None
        return running_pid_from_file(self.pid_file)

    def diagnose(self) -> str:
        try:
            text = self.pid_file.read_text()
            pid = int(text.split()[0])
            stat = Path(f"/proc/{pid}/stat").read_text()[:60]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()[:120]
        except (OSError, ValueError, IndexError) as error:
            return f"pid file {self.pid_file}: {error!r}"
        return f"pid file {text!r}, stat {stat!r}, cmdline {cmdline!r}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def running_pid_from_file(pid_file: Path) -> int | None:
    """The pid if that process still runs the program we started (pids get reused)."""
    try:
        pid_text, program = pid_file.read_text().splitlines()[:2]
        pid = int(pid_text)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    if not cmdline or os.fsencode(program) not in cmdline[:2]:
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return None
    return None if state == "Z" else pid


def stop_child(process: subprocess.Popen[bytes], grace_seconds: float = 10.0) -> None:
    """TERM a child started in our own group, wait for it, then KILL it if it is still there."""
    process.terminate()
    try:
        process.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_process_group(pid: int, grace_seconds: float = 10.0) -> None:
    """TERM the whole group, wait for it to go, then KILL what is left."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return
        _reap(pid)
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _group_alive(pgid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    # A child of ours stays a zombie (and its group "alive") until we wait for it.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
