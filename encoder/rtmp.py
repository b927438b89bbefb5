"""The RTMP front: nginx with the nginx-rtmp module, so a publisher with the wrong stream key is
refused. ffmpeg's own RTMP listener ingests whatever key it is given.

nginx asks our hook server (on 127.0.0.1, never the Pod address) before every publish and play;
the hook accepts a publish only for the job's stream key, and a play only with a per-process token
that the encoder's own ffmpeg presents, so nobody else can watch the raw ingest.

Our ffmpeg joins the stream before a publisher arrives (idle_streams on), so it reads the publish
from its first frame: a play that follows the publish would start at the next keyframe and lose up
to a GOP. When the publisher leaves, the encoder drops that player through nginx's control API (a
Unix socket in the work directory): ffmpeg sees the end of its input and closes its last segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp

from onair.urls import url_host

log = logging.getLogger(__name__)

RTMP_APPLICATION = "live"
NGINX_RTMP_MODULE_PATHS = (
    Path("/usr/lib/nginx/modules/ngx_rtmp_module.so"),
    Path("/usr/lib64/nginx/modules/ngx_rtmp_module.so"),
)
PLAY_TOKEN_PARAMETER = "onair_token"


@dataclass(frozen=True)
class RtmpFrontConfig:
    listen_host: str
    port: int
    hook_base_url: str  # http://127.0.0.1:<port>
    work_dir: Path
    module_path: Path

    @property
    def control_socket(self) -> Path:
        return self.work_dir / "control.sock"


def die_with_parent() -> None:
    """preexec_fn of our children (nginx, ffmpeg): the kernel kills them if the encoder dies, even by
    SIGKILL, so a crashed encoder never leaves a listener holding its ports."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (str(path) for path in (Path("/usr/sbin/nginx"),) if path.exists()), None
    )


def find_rtmp_module() -> Path | None:
    return next((path for path in NGINX_RTMP_MODULE_PATHS if path.exists()), None)


def render_nginx_config(config: RtmpFrontConfig) -> str:
    """nginx.conf of the front. One worker, no daemon: the encoder supervises it as a child."""
    hooks = config.hook_base_url.rstrip("/")
    host = url_host(config.listen_host)
    return f"""load_module {config.module_path};
daemon off;
master_process off;
worker_processes 1;
pid {config.work_dir / "nginx.pid"};
error_log stderr warn;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen {host}:{config.port};
        # Else nginx-rtmp opens its compiled-in log path (/var/log/nginx/access.log) at start, which
        # the Pod's user cannot write (non-root, read-only root filesystem): nginx would exit.
        access_log off;
        chunk_size 4096;
        ping 10s;
        ping_timeout 5s;
        application {RTMP_APPLICATION} {{
            live on;
            # Our ffmpeg waits on the stream before the publisher arrives (it gets the first
            # frame); the encoder drops it when the publisher leaves, so a reconnect is a new
            # session (DISCONTINUITY) rather than a stall.
            idle_streams on;
            drop_idle_publisher 10s;
            wait_key on;
            wait_video on;
            on_publish {hooks}/rtmp/publish;
            on_publish_done {hooks}/rtmp/publish_done;
            on_play {hooks}/rtmp/play;
            notify_method post;
        }}
    }}
}}
http {{
    access_log off;
    client_body_temp_path {config.work_dir / "http-body"};
    proxy_temp_path {config.work_dir / "http-proxy"};
    fastcgi_temp_path {config.work_dir / "http-fastcgi"};
    uwsgi_temp_path {config.work_dir / "http-uwsgi"};
    scgi_temp_path {config.work_dir / "http-scgi"};
    server {{
        listen unix:{config.control_socket};
        location /control {{ rtmp_control all; }}
    }}
}}
"""


class NginxRtmpFront:
    """Runs nginx with the rendered config; restarts are the encoder's business (it exits)."""

    def __init__(self, config: RtmpFrontConfig, nginx: str) -> None:
        self.config = config
        self.nginx = nginx
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        conf = self.config.work_dir / "nginx.conf"
        conf.write_text(render_nginx_config(self.config))
        self.process = await asyncio.create_subprocess_exec(
            self.nginx, "-p", str(self.config.work_dir), "-c", str(conf), "-e", "stderr",
            stdin=asyncio.subprocess.DEVNULL, preexec_fn=die_with_parent,
        )  # fmt: skip

    async def wait_listening(self, timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self.process is not None and self.process.returncode is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}")
            try:
                _, writer = await asyncio.open_connection(self.config.listen_host, self.config.port)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def drop_players(self, stream: str) -> int:
        """Ends the play sessions of `stream` (our ffmpeg's); returns how many there were."""
        url = f"http://nginx/control/drop/subscriber?app={RTMP_APPLICATION}&name={quote(stream, safe='')}"
        try:
            connector = aiohttp.UnixConnector(path=str(self.config.control_socket))
            async with aiohttp.ClientSession(connector=connector) as session, \
                    session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                body = await response.text()
        except (aiohttp.ClientError, TimeoutError) as error:
            log.warning("could not end the RTMP play session through nginx: %s", error)
            return 0
        return int(body) if body.strip().isdigit() else 0

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), 3)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
