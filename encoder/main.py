"""`onair-encoder`: the program inside the encoder Pod.

Exit codes: 0 done (including a clean stop on SIGTERM); 2 the configuration can never work (the
operator marks the job Failed without retrying); anything else a transient failure (restarted).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

from aiohttp import web

from onair.addresses import AddressPolicy, NotPublicError, allowed_addresses_now, storage_refusal
from onair.exitcodes import EXIT_BAD_CONFIG, EXIT_TRANSIENT
from onair.jsonlog import add_context, setup_logging

from .clip import ClipJob
from .config import ConfigError, IngestKind, JobConfig, endpoint_field, load_job_config
from .pipeline import Encoder, FatalConfigError, Ports, spool_limit_from_env
from .preview import preview_app
from .server import hook_app, status_app
from .srt import SrtUnavailable, load_libsrt
from .status import EncoderState
from .upload import S3Store

log = logging.getLogger("onair.encoder")
TERMINATION_LOG = "/dev/termination-log"  # the kubelet's default terminationMessagePath
TERMINATION_MESSAGE_BYTES = 4096  # what the kubelet keeps of it


def write_termination_message(text: str) -> None:
    """The last word of the run, for its Pod's status (terminated.message): the operator puts a clip's
    (where it begins, when older segments had gone) in its RecordJob's status. The kubelet mounts the
    file; ONAIR_TERMINATION_MESSAGE_PATH names another. Where neither is there, nothing is written."""
    path = os.environ.get("ONAIR_TERMINATION_MESSAGE_PATH") or (
        TERMINATION_LOG if os.path.exists(TERMINATION_LOG) else None)
    if not path or not text:
        return
    try:
        Path(path).write_bytes(text.encode()[:TERMINATION_MESSAGE_BYTES])
    except OSError as error:
        log.warning("could not write the termination message to %s: %s", path, error)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="onair-encoder", description=__doc__)
    parser.add_argument("--rtmp-port", type=int, default=1935, help="RTMP ingest port (nginx-rtmp front)")
    parser.add_argument("--srt-port", type=int, default=9000, help="SRT listener port")
    parser.add_argument("--status-port", type=int, default=8090, help="HTTP port of /status, /metrics, /healthz")
    parser.add_argument("--preview-port", type=int, default=8091,
                        help="HTTP port of a LiveJob's live preview over WebSocket (with ONAIR_PREVIEW_KEY)")
    return parser.parse_args(argv)


async def serve(config: JobConfig, ports: Ports) -> int:
    # A directory of its own for every run, also inside a given ONAIR_WORK_DIR: the local playlists and
    # segments a killed run left there are never taken for this run's.
    parent = os.environ.get("ONAIR_WORK_DIR") or None
    if parent:
        os.makedirs(parent, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="onair-", dir=parent))  # short: it holds a Unix socket
    store = S3Store(config.storage.endpoint, config.storage.bucket, config.storage.region,
                    config.storage.addressing_style, config.storage_policy)
    encoder = Encoder(config, ports, work_dir, store, spool_limit_from_env())
    job: Encoder | ClipJob = encoder
    if config.ingest.kind == IngestKind.STORED:
        assert config.clip is not None
        source = config.clip.source_bucket
        job = ClipJob(config, config.clip, store, encoder.status, work_dir, store.in_bucket(source) if source else None)
    runners: list[web.AppRunner] = []
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        log.info("stop requested by signal")
        job.request_stop()
        # Whatever happens, be gone before the kubelet's SIGKILL: a recording cut short there is not done.
        loop.call_later(encoder.stop_grace_seconds - 0.5, lambda: os._exit(encoder.exit_code(uploaded=False)))

    try:
        if config.storage_policy is not None:
            await refuse_unreachable_store(config.storage.endpoint, endpoint_field(config.kind),
                                           config.storage_policy)
        if config.ingest.kind == IngestKind.PULL:
            await encoder.pull_guard.start()  # before the preview serves: its ffmpeg pulls through it
        status = status_app(job, pausable=config.outputs.pausable, control_key=config.control_key)
        status_runner = web.AppRunner(status, access_log=None)
        await status_runner.setup()
        runners.append(status_runner)
        await web.TCPSite(status_runner, config.listen_host, ports.status).start()
        if config.kind == "LiveJob" and config.preview_key:
            # A short shutdown: the viewers are told to go (on_shutdown), nothing of theirs is worth waiting for.
            preview_runner = web.AppRunner(preview_app(encoder.preview, config.preview_key), access_log=None,
                                           shutdown_timeout=1.0)
            await preview_runner.setup()
            runners.append(preview_runner)
            await web.TCPSite(preview_runner, config.listen_host, ports.preview).start()
        if config.ingest.kind == IngestKind.RTMP_LISTEN:
            hooks_runner = web.AppRunner(hook_app(encoder), access_log=None)
            await hooks_runner.setup()
            runners.append(hooks_runner)
            site = web.TCPSite(hooks_runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            encoder.hook_url = f"http://127.0.0.1:{port}"
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal)
        code = await job.run()
    except FatalConfigError as error:
        encoder.status.set_state(EncoderState.FAILED, str(error))
        log.error("%s", error)
        code = EXIT_BAD_CONFIG
    finally:
        for runner in runners:
            await runner.cleanup()
        await encoder.pull_guard.close()
        shutil.rmtree(work_dir, ignore_errors=True)
    write_termination_message(encoder.status.message)
    return code


async def refuse_unreachable_store(endpoint: str, field: str, policy: AddressPolicy) -> None:
    """An S3 endpoint the job names whose name resolves to refused addresses only can never be written
    to: FatalConfigError naming the field. A name that does not resolve now is left to the uploads'
    retries, and every connection is checked again (S3Store)."""
    host = urlsplit(endpoint).hostname or ""
    try:
        await asyncio.get_running_loop().run_in_executor(None, allowed_addresses_now, host, None, policy,
                                                         storage_refusal)
    except NotPublicError as refused:
        raise FatalConfigError(f"{field}: {refused}") from refused
    except OSError as error:
        log.warning("the S3 endpoint %s does not resolve now (%s): the uploads retry", host, error)


def refuse(why: str) -> NoReturn:
    """A configuration that can never work: said in the log and the termination message, exit 2."""
    log.error("%s", why)
    write_termination_message(why)
    sys.exit(EXIT_BAD_CONFIG)


def main(argv: list[str] | None = None) -> None:
    setup_logging(os.environ.get("ONAIR_LOG_LEVEL", "INFO"))
    args = parse_args(argv)
    try:
        config = load_job_config()
    except ConfigError as error:
        refuse(str(error))
    add_context(kind=config.kind, namespace=config.namespace, job=config.name)
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        refuse(f"missing in the image: {', '.join(missing)}")
    if config.ingest.kind == IngestKind.SRT_LISTEN:
        try:
            load_libsrt()
        except SrtUnavailable as error:
            refuse(str(error))
    ports = Ports(rtmp=args.rtmp_port, srt=args.srt_port, status=args.status_port, preview=args.preview_port)
    try:
        code = asyncio.run(serve(config, ports))
    except OSError as error:  # e.g. a port in use: may clear up on a restart
        log.error("%s", error)
        write_termination_message(str(error))
        code = EXIT_TRANSIENT
    except Exception as error:
        log.exception("encoder crashed")
        write_termination_message(f"encoder crashed: {error!r}")
        code = EXIT_TRANSIENT
    sys.exit(code)


if __name__ == "__main__":
    main()
