"""A real TURN server (Debian's coturn, `turnserver`) on 127.0.0.1 for tests of relayed media."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def coturn(secret: str, folder: Path):
    """Run ``turnserver`` with the shared-secret scheme on a free UDP port; yields ``turn:127.0.0.1:PORT``."""
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.skip("coturn is not installed: `make test` installs Debian's `coturn` (apt-get install -y coturn)")
    port = free_udp_port()
    log = folder / "turnserver.log"
    args = [binary, "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}", "--relay-ip=127.0.0.1",
            "--use-auth-secret", f"--static-auth-secret={secret}", "--realm=gramcast.test",
            # The peers are on this machine; a production TURN server refuses to relay to loopback.
            "--allow-loopback-peers", "--no-tls", "--no-dtls", "--no-cli", "--no-tcp-relay",
            f"--userdb={folder / 'turndb'}", f"--pidfile={folder / 'turnserver.pid'}",
            "--log-file=stdout", "--simple-log", "--verbose"]
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while "Total General servers" not in log.read_text() and "turn server id=" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"turnserver did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        time.sleep(0.2)
        proc.log = log
        yield f"turn:127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
