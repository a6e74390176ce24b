"""A port already in use is one line naming the config key and the address, exit 2."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.harness import Daemon


def _taken(kind: int = socket.SOCK_STREAM) -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        sock.listen(1)
    return sock, int(sock.getsockname()[1])


def test_a_sip2_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    holder, port = _taken()
    try:
        sections = f"""
[sip2]
listen = ["127.0.0.1:0", "127.0.0.1:{port}"]
"""
        daemon = Daemon(tmp_path, sections)
        result = daemon.cli("serve")
    finally:
        holder.close()
    assert result.returncode == 2
    assert result.stdout == ""
    # The daemon's log lines go to stderr too; the error is the last line, alone.
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"patron-bridge: config: {daemon.config}: sip2.listen[1]: cannot listen on "
        f"127.0.0.1:{port}: Address already in use"
    )


def test_a_radius_port_in_use_names_the_radius_key(tmp_path: Path) -> None:
    holder, port = _taken(socket.SOCK_DGRAM)
    try:
        sections = f"""
[radius]
listen = ["127.0.0.1:{port}"]
"""
        daemon = Daemon(tmp_path, sections)
        result = daemon.cli("serve")
    finally:
        holder.close()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"patron-bridge: config: {daemon.config}: radius.listen[0]: cannot listen on "
        f"127.0.0.1:{port}: Address already in use"
    )


def test_the_metrics_port_in_use_names_metrics_listen(tmp_path: Path) -> None:
    holder, port = _taken()
    try:
        daemon = Daemon(tmp_path, f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
        result = daemon.cli("serve")
    finally:
        holder.close()
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"patron-bridge: config: {daemon.config}: metrics.listen: cannot listen on "
        f"127.0.0.1:{port}: Address already in use"
    )
