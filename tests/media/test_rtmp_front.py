"""The RTMP front (nginx-rtmp) as the image runs it: as a user who may write nothing but the
encoder's work directory (uid 10001 on a read-only root filesystem in the Pod)."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from pathlib import Path

from media_helpers import free_port
from waiting import wait_until

from onair.encoder.rtmp import RtmpFrontConfig, find_nginx, find_rtmp_module, render_nginx_config

NOBODY = 65534


def accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_nginx_runs_from_the_work_directory_alone() -> None:
    nginx, module = find_nginx(), find_rtmp_module()
    assert nginx is not None and module is not None, "the encoder's image has nginx and nginx-rtmp"
    # Not pytest's tmp_path: it is private to whoever runs the tests, and nginx may run as nobody.
    with tempfile.TemporaryDirectory(prefix="onair-rtmp-front-") as directory:
        work = Path(directory)
        user: dict[str, object] = {}
        if os.geteuid() == 0:  # as nobody, who owns the work directory and nothing else
            os.chown(work, NOBODY, NOBODY)
            user = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
        config = RtmpFrontConfig("127.0.0.1", free_port(), "http://127.0.0.1:9", work, module)
        (work / "nginx.conf").write_text(render_nginx_config(config))
        process = subprocess.Popen(  # type: ignore[call-overload]
            [nginx, "-p", str(work), "-c", str(work / "nginx.conf"), "-e", "stderr"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **user)
        try:
            def listening() -> bool:
                assert process.poll() is None, f"nginx exited {process.returncode}: {process.communicate()[0]}"
                return accepts(config.port) and config.control_socket.exists()

            wait_until(listening, 10, "nginx's RTMP port and its control socket")
        finally:
            process.terminate()
            process.wait(10)
