"""Helpers of the media tests: the S3 server's cuttable proxy, encoder processes, ffmpeg publishers,
ffprobe checks, job specs."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import requests
from waiting import wait_until

from onair.encoder.playlist import parse_master_playlist, parse_media_playlist

WEED = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
ENCODER = str(Path(sys.executable).parent / "onair-encoder")  # the console script the Pod runs
ACCESS_KEY, SECRET_KEY, REGION = "onairtest", "onairtestsecret", "us-east-1"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class CuttableProxy:
    """TCP proxy in front of the S3 server. `cut()` closes the listener and every connection (the
    store is down: connection refused), `restore()` listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = False
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            # shutdown() first: a bare close() neither wakes the thread blocked in accept() nor stops
            # the kernel from accepting on that socket.
            if self._listener is not None:
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            self._connections.clear()

    def stop(self) -> None:
        self._stopped = True
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        try:
            while True:
                for key, _ in selector.select(timeout=1):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            selector.close()
            for sock in (client, upstream):
                sock.close()
            with self._lock:
                self._connections.discard(client)
                self._connections.discard(upstream)


def max_age(cache_control: str) -> int:
    """The max-age of a Cache-Control header, in seconds (0 when it has none)."""
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        if name == "max-age":
            return int(value)
    return 0


@dataclass
class ObjectStore:
    endpoint: str  # through the proxy
    direct_endpoint: str
    proxy: CuttableProxy
    client: Any  # boto3 S3 client, direct (unaffected by cuts)

    bucket: str  # one bucket for the session: SeaweedFS gives every bucket its own volumes, and
    # -volume.max=16 runs out after a few; tests keep apart by key prefix instead.

    def get_text(self, bucket: str, key: str) -> str | None:
        try:
            return str(self.client.get_object(Bucket=bucket, Key=key)["Body"].read().decode())
        except self.client.exceptions.NoSuchKey:
            return None

    def sizes(self, bucket: str, folder: str) -> dict[str, int]:
        """The objects directly in `folder`: name -> size in bytes (one listing, not a HEAD each)."""
        prefix = folder.rstrip("/") + "/"
        sizes: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            sizes.update((entry["Key"][len(prefix):], int(entry["Size"])) for entry in page.get("Contents", []))
        return sizes

    def assert_vod_master_states_measured_bit_rates(self, bucket: str, prefix: str) -> None:
        """Apple's HLS authoring rules for VOD: each variant's AVERAGE-BANDWIDTH within 10% of the mean
        bit rate of its segments, and BANDWIDTH within 10% of the peak. The peak (RFC 8216 4.1: over runs of
        segments lasting 0.5 to 1.5 target durations) is at least the rate of any segment that lasts half
        a target duration, and at most the highest rate of any one segment."""
        variants = parse_master_playlist(self.get_text(bucket, f"{prefix}/master.m3u8") or "")
        assert variants
        for variant in variants:
            playlist = parse_media_playlist(self.get_text(bucket, f"{prefix}/{variant.uri}") or "")
            folder = f"{prefix}/{variant.uri.rsplit('/', 1)[0]}"
            stored = self.sizes(bucket, folder)
            bits = [stored[segment.uri] * 8 for segment in playlist.segments]
            average = sum(bits) / sum(segment.duration for segment in playlist.segments)
            assert variant.average_bandwidth is not None, variant
            assert abs(variant.average_bandwidth - average) <= 0.1 * average, (variant, average)
            rates = [(size / segment.duration, segment.duration)
                     for size, segment in zip(bits, playlist.segments, strict=True)]
            least = max(rate for rate, duration in rates if duration >= (playlist.target_duration or 1) / 2)
            most = max(rate for rate, _ in rates)
            assert 0.9 * least <= variant.bandwidth <= 1.1 * most, (variant, least, most)

    def download_prefix(self, bucket: str, prefix: str, target: Path) -> list[str]:
        keys = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                key = entry["Key"]
                path = target / key[len(prefix) :].lstrip("/")
                path.parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(bucket, key, str(path))
                keys.append(key)
        return keys


@dataclass
class EncoderProcess:
    process: subprocess.Popen[bytes]
    host: str
    rtmp_port: int
    srt_port: int
    status_port: int
    stream_key: str
    control_key: str
    bucket: str
    prefix: str
    log_path: Path
    preview_port: int
    preview_key: str
    states_seen: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.status_port}"

    def preview_url(self, key: str | None = None) -> str:
        return f"ws://{self.host}:{self.preview_port}/websocketplay/{self.preview_key if key is None else key}"

    @property
    def rtmp_url(self) -> str:
        return f"rtmp://{self.host}:{self.rtmp_port}/live/{self.stream_key}"

    def status(self) -> dict[str, Any]:
        try:
            document: dict[str, Any] = requests.get(f"{self.base_url}/status", timeout=2).json()
        except requests.ConnectionError:
            if self.process.poll() is None:
                raise
            # Gone: its exit code and log say why, not the refused connection.
            raise AssertionError(f"the encoder exited {self.process.returncode}; its log ends:\n"
                                 f"{self.log()[-4000:]}") from None
        if not self.states_seen or self.states_seen[-1] != document["state"]:
            self.states_seen.append(document["state"])
        return document

    def storage_once_answering(self) -> dict[str, Any] | None:
        """The status' storage part; None while the encoder does not answer yet (its server is starting)."""
        try:
            return dict(self.status()["storage"])
        except requests.ConnectionError:
            return None

    def wait_state(self, state: str, timeout: float) -> dict[str, Any]:
        try:
            return wait_until(lambda: (s := self.status())["state"] == state and s, timeout,
                              f"encoder state {state}", interval=0.1)
        except AssertionError as error:  # what the encoder went through instead says why
            raise AssertionError(f"{error}; states seen {self.states_seen}; the encoder's log ends:\n"
                                 f"{self.log()[-3000:]}") from None

    def post(self, path: str, control_key: str | None = None) -> requests.Response:
        """A command, as the operator sends it: with the job's control key (unless another is given)."""
        key = self.control_key if control_key is None else control_key
        return requests.post(f"{self.base_url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=5)

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def pattern_input(seconds: float, size: str = "640x360", rate: int = 30, video: str | None = "h264",
                  audio: str = "aac") -> list[str]:
    """A generated test pattern with a tone, paced in real time like a live source; `video` h264 or
    hevc (a 1-s GOP either way), or None for the tone alone; `audio` an ffmpeg encoder name (aac, mp2,
    ac3...)."""
    tone = ["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    if video is None:
        return [*tone, "-t", str(seconds), "-c:a", audio, "-b:a", "96k", "-ac", "2"]
    if video == "hevc":
        video_args = ["-c:v", "libx265", "-preset", "ultrafast", "-tune", "zerolatency",
                      "-x265-params", f"keyint={rate}:min-keyint={rate}:scenecut=0:log-level=error"]
    else:
        video_args = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(rate)]
    return [
        "-re", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}", *tone,
        "-t", str(seconds),
        *video_args, "-pix_fmt", "yuv420p",
        "-c:a", audio, "-b:a", "96k", "-ac", "2",
    ]  # fmt: skip


def publish(url: str, seconds: float, container: str = "flv", **kwargs: Any) -> subprocess.Popen[bytes]:
    argv = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *pattern_input(seconds, **kwargs),
            "-f", container, url]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def ffprobe(path: Path, *extra: str) -> dict[str, Any]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_streams", "-show_format", *extra, str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def first_frame_is_keyframe(path: Path) -> bool:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=key_frame,pict_type",
         "-read_intervals", "%+#1", "-of", "json", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    frames = json.loads(result.stdout).get("frames", [])
    return bool(frames) and frames[0].get("key_frame") == 1


def check_rendition(store: ObjectStore, encoder: EncoderProcess, name: str, width: int, height: int, codec: str,
                    target: Path, *, ended: bool, video_tag: str | None = None) -> list[Path]:
    """The rendition's playlist parses and every segment it names has the right video (and sample
    entry `video_tag`), AAC audio and a keyframe first."""
    text = store.get_text(encoder.bucket, f"{encoder.prefix}/{name}/index.m3u8")
    assert text is not None, f"no playlist for {name}"
    playlist = parse_media_playlist(text)
    assert playlist.segments, text
    assert playlist.ended == ended
    assert playlist.target_duration is not None
    assert all(round(segment.duration) <= playlist.target_duration for segment in playlist.segments)
    assert all(segment.duration > 0 for segment in playlist.segments), text  # no empty segments
    assert all(segment.program_date_time is not None for segment in playlist.segments)
    numbers = [segment.sequence for segment in playlist.segments]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    paths = []
    for segment in playlist.segments:
        path = target / name / segment.uri
        path.parent.mkdir(parents=True, exist_ok=True)
        store.client.download_file(encoder.bucket, f"{encoder.prefix}/{name}/{segment.uri}", str(path))
        if segment.init_uri:
            init = target / name / segment.init_uri
            store.client.download_file(encoder.bucket, f"{encoder.prefix}/{name}/{segment.init_uri}", str(init))
            joined = path.with_suffix(".joined.mp4")
            joined.write_bytes(init.read_bytes() + path.read_bytes())
            path = joined
        probe = ffprobe(path)
        video = [stream for stream in probe["streams"] if stream["codec_type"] == "video"]
        audio = [stream for stream in probe["streams"] if stream["codec_type"] == "audio"]
        assert len(video) == 1 and len(audio) == 1, f"{segment.uri}: {probe['streams']}"
        assert (video[0]["width"], video[0]["height"], video[0]["codec_name"]) == (width, height, codec)
        assert video_tag is None or video[0]["codec_tag_string"] == video_tag, video[0]
        assert audio[0]["codec_name"] == "aac"
        assert first_frame_is_keyframe(path), f"{name}/{segment.uri} does not start with a keyframe"
        paths.append(path)
    return paths


SEGMENT_SECONDS = 2
# How long an encoder may take to go live once its source is there: a ceiling for the slowest
# start under a full test run's load (the waits end as soon as it is live).
GOES_LIVE_WITHIN_S = 30


def ladder_template(*renditions: tuple[str, int, int, str]) -> dict[str, Any]:
    return {
        "id": 1,
        "name": "test ladder",
        "renditions": [
            {"name": name, "width": width, "height": height, "fps": 30, "videoBitrate": 400_000 * height // 180,
             "codec": codec}
            for name, width, height, codec in renditions
        ],
        "audio": {"codec": "AAC", "bitrate": 96000, "sampleRate": 48000, "channels": 2},
        "segmentDurationSeconds": SEGMENT_SECONDS,
        "playlistWindow": 5,
    }


H264_LADDER = ladder_template(("360p", 640, 360, "H264"), ("270p", 480, 270, "H264"), ("180p", 320, 180, "H264"))


def live_spec(server_type: str = "RTMP", **extra: Any) -> dict[str, Any]:
    return {
        "jobTemplateId": 1,
        "input": {"serverType": server_type},
        "destination": {"bucket": "ignored", "path": "live/test"},
        **extra,
    }


def children_named(pid: int, name: str) -> dict[int, list[str]]:
    """The processes called `name` whose parent is `pid`: their command lines."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            command = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if text[text.index("(") + 1 : text.rindex(")")] == name and int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            found[int(stat.parent.name)] = [part.decode() for part in command if part]
    return found


def job_environment(template: dict[str, object]) -> dict[str, str]:
    """The encoder's environment for a LiveJob on `template`, for building its commands (nothing runs)."""
    job = {"kind": "LiveJob", "namespace": "ns", "name": "job", "attempt": 1, "spec": live_spec(), "template": template,
           "storage": {"endpoint": "http://s3:8333", "bucket": "media", "prefix": "live/job", "region": "x"},
           "clip": None}
    return {"ONAIR_JOB_CONFIG": json.dumps(job), "ONAIR_STREAM_KEY": "key", "ONAIR_LISTEN_HOST": "127.0.0.9"}


class _OriginHandler(http.server.SimpleHTTPRequestHandler):
    requested: list[str]  # the paths asked for, in order
    authorization: str | None = None  # the one Authorization it accepts (else 401 with a Basic challenge)
    cookie: str | None = None  # the Set-Cookie of its playlists, whose name=value the rest needs (else 403)

    def do_GET(self) -> None:
        if self.authorization is not None and self.headers.get("Authorization") != self.authorization:
            self._refuse(401, ("WWW-Authenticate", 'Basic realm="origin"'))
        elif self.cookie is not None and not self._playlist() and self.cookie.split(";")[0] not in [
                pair.strip() for pair in (self.headers.get("Cookie") or "").split(";")]:
            self._refuse(403)
        else:
            super().do_GET()

    def end_headers(self) -> None:
        if self.cookie is not None and self._playlist():
            self.send_header("Set-Cookie", self.cookie)
        super().end_headers()

    def _playlist(self) -> bool:
        return self.path.split("?")[0].endswith(".m3u8")

    def _refuse(self, status: int, *fields: tuple[str, str]) -> None:
        self.send_response(status)
        for name, value in fields:
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.requested.append(self.path)


def serve_directory(root: Path, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None, user: str | None = None,
                    cookie: str | None = None) -> tuple[http.server.ThreadingHTTPServer, list[str]]:
    """An HTTP(S) origin of `root` on `host`, as a CDN or packager serves a live HLS stream, and the paths
    it is asked for. `user`: the Basic `user:password` credentials it asks for; `cookie`: a Set-Cookie
    its playlists carry and its other files need back. Stop it with shutdown() and server_close()."""
    authorization = "Basic " + base64.b64encode(user.encode()).decode() if user is not None else None
    handler = type("Handler", (_OriginHandler,), {"requested": [], "authorization": authorization, "cookie": cookie})
    server = http.server.ThreadingHTTPServer((host, 0), partial(handler, directory=str(root)))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler.requested
