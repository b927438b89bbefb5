"""Encoder ladder benchmark: a 720p30 source through a 3-rendition x264 ladder.

In one run, one after the other on the same machine, with the same source paced in real time, in
--rounds rounds whose order alternates (encoder, single, separate; then separate, single, encoder), so
that a machine whose speed drifts during the run (a shared host) weighs on each side alike:
  encoder   the onair encoder (RTMP ingest through nginx-rtmp, HLS, upload to SeaweedFS S3)
  single    one hand-written ffmpeg command doing the same ladder (split + scale, HLS to local disk)
  separate  one ffmpeg process per rendition (each decodes the source itself)
  baseline  with --baseline CHECKOUT: the encoder of another checkout, in every round as well
  decode    one decode of the source alone (not paced): what a shared decode saves per process, and so the best
            ratio to `separate` a one-decode ladder doing `single`'s work can reach on this source and machine
            (the encoder does less: it encodes the audio once for every rendition, where `single` and
            `separate` encode it once per rendition, and sizes x264's threads to the CPUs it may use)
It reports CPU seconds (user + system of each process tree; for the encoder also its ffmpeg's alone, sampled
from /proc until it exits), the ratios, and the encoder's segment availability latency (segment closed on
disk -> object and updated playlist uploaded), p50 and p99. The encoder's figure is what it spent from just
before the publisher connected until it exited: what encoding the stream cost. What it spent starting
(Python's imports, nginx; once per Pod, which then encodes for hours) is printed apart, and the ratios with
it as well.
The bucket is warmed first (SeaweedFS allocates a new bucket's volumes on the first writes).

    .venv/bin/python hack/bench/encoder_ladder.py [--seconds 60] [--rounds 2] [--baseline CHECKOUT]
Goals (issue 4): encoder <= 1.05 x single, <= 0.8 x separate, p99 <= 300 ms on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import boto3
from benchkit import cpu_seconds, process_table, tree_cpu_seconds

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from localplatform import seaweedfs
from localplatform.processes import free_port, stop_child

RENDITIONS = [("720p", 1280, 720, 3_000_000), ("480p", 854, 480, 1_200_000), ("360p", 640, 360, 800_000)]
SEGMENT_SECONDS = 4
FPS = 30


def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def cpu_seconds_of(process: subprocess.Popen[bytes]) -> float:
    """Waits for the process and returns the CPU time of it and every descendant it waited for."""
    _, _, usage = os.wait4(process.pid, 0)
    process.returncode = 0
    return usage.ru_utime + usage.ru_stime


def cpu_seconds_now(pid: int) -> float | None:
    """The CPU time of a running process so far; None once it is gone."""
    try:
        return cpu_seconds(pid)
    except OSError:
        return None


class CpuSampler:
    """The CPU time of processes that another process will reap, read from /proc until they exit: at most
    one interval's worth short."""

    def __init__(self, pids: set[int], interval: float = 0.1) -> None:
        self.last = dict.fromkeys(pids, 0.0)
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        alive = set(self.last)
        while alive:
            for pid in list(alive):
                seconds = cpu_seconds_now(pid)
                if seconds is None:
                    alive.discard(pid)
                else:
                    self.last[pid] = seconds
            time.sleep(self._interval)

    def total(self) -> float:
        self._thread.join()
        return sum(self.last.values())


def ffmpeg_children(pid: int) -> set[int]:
    """The ffmpeg processes `pid` runs now (an encoder's sessions)."""
    return {child for child, (name, fields) in process_table().items() if name == "ffmpeg" and int(fields[1]) == pid}


def make_source(directory: Path, seconds: int) -> Path:
    source = directory / "source.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate={FPS}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", "4M", "-g", str(FPS * 2), "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", str(source)],
        check=True,
    )  # fmt: skip
    return source


def x264_args(bitrate: int) -> list[str]:
    keyint = FPS * 2
    return ["-c:v", "libx264", "-preset", "veryfast", "-b:v", str(bitrate), "-maxrate", str(int(bitrate * 1.1)),
            "-bufsize", str(bitrate * 2), "-g", str(keyint), "-keyint_min", str(keyint), "-sc_threshold", "0",
            "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT_SECONDS})", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "128000", "-ar", "48000", "-ac", "2"]


def hls_args(directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    return ["-f", "hls", "-hls_time", str(SEGMENT_SECONDS), "-hls_list_size", "0",
            "-hls_segment_filename", str(directory / "seg_%06d.ts"), str(directory / "index.m3u8")]


def run_single(source: Path, out: Path) -> float:
    graph = "[0:v:0]split=3[s0][s1][s2];" + ";".join(
        f"[s{i}]fps={FPS},scale={w}:{h},setsar=1[v{i}]" for i, (_, w, h, _) in enumerate(RENDITIONS)
    )
    argv = ["ffmpeg", "-v", "error", "-nostdin", "-re", "-i", str(source), "-filter_complex", graph]
    for i, (name, _, _, bitrate) in enumerate(RENDITIONS):
        argv += ["-map", f"[v{i}]", "-map", "0:a:0", *x264_args(bitrate), *hls_args(out / "single" / name)]
    return cpu_seconds_of(subprocess.Popen(argv))


def run_separate(source: Path, out: Path) -> float:
    processes = []
    for name, width, height, bitrate in RENDITIONS:
        argv = ["ffmpeg", "-v", "error", "-nostdin", "-re", "-i", str(source), "-map", "0:v:0", "-map", "0:a:0",
                "-vf", f"fps={FPS},scale={width}:{height},setsar=1", *x264_args(bitrate),
                *hls_args(out / "separate" / name)]
        processes.append(subprocess.Popen(argv))
    return sum(cpu_seconds_of(process) for process in processes)


def run_decode_only(source: Path) -> float:
    """The CPU one more decode of the source costs: what each process of `separate` beyond the first
    spends that one shared decode does not. (Not paced: the CPU is the same, the wait is not.)"""
    argv = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(source), "-map", "0:v:0", "-f", "null", "-"]
    return cpu_seconds_of(subprocess.Popen(argv))


def start_seaweedfs(directory: Path) -> tuple[subprocess.Popen[bytes], str, tuple[str, str]]:
    keys = ("bench", "benchsecret")
    identities = directory / "identities.json"
    seaweedfs.write_identities(identities, *keys)
    argv = seaweedfs.server_argv(Path(sys.executable).parent / "weed", directory, identities)
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=directory)
    endpoint = f"http://127.0.0.1:{seaweedfs.s3_port(argv)}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=keys[0], aws_secret_access_key=keys[1],
                          region_name="us-east-1")
    wait_for(lambda: client.create_bucket(Bucket="bench") or True, 60, "SeaweedFS")
    # SeaweedFS allocates a new bucket's volumes on its first writes (about a second), which a bucket
    # in service has long done: warm it, so that the latency measured is the encoder's.
    with ThreadPoolExecutor(len(RENDITIONS)) as pool:
        list(pool.map(lambda n: client.put_object(Bucket="bench", Key=f"warm/{n}", Body=b"x" * 100_000), range(9)))
    return process, endpoint, keys


class EncoderRun(NamedTuple):
    cpu: float  # the encoder's whole process tree, from just before the publish until it exited
    ffmpeg_cpu: float  # the ffmpeg of the publish alone
    final: dict[str, Any]  # its last /status
    startup_cpu: float  # the tree's before the publish: starting, then idle


def run_encoder(source: Path, work: Path, endpoint: str, keys: tuple[str, str], prefix: str,
                checkout: Path | None = None) -> EncoderRun:
    """The encoder of this checkout, or (`checkout`) of another one, ingesting `source` over RTMP."""
    host, key = "127.0.0.77", secrets.token_hex(8)
    ports = {name: free_port() for name in ("rtmp", "srt", "status")}
    template = {"id": 1, "name": "bench", "segmentDurationSeconds": SEGMENT_SECONDS, "playlistWindow": 6,
                "renditions": [{"name": n, "width": w, "height": h, "fps": FPS, "videoBitrate": b}
                               for n, w, h, b in RENDITIONS]}
    config = {"kind": "LiveJob", "namespace": "bench", "name": "bench", "attempt": 1, "template": template,
              "spec": {"jobTemplateId": 1, "input": {"serverType": "RTMP"}, "destination": {"bucket": "bench"}},
              "storage": {"endpoint": endpoint, "bucket": "bench", "prefix": prefix, "region": "us-east-1"}}
    env = {**os.environ, "ONAIR_JOB_CONFIG": json.dumps(config), "ONAIR_STREAM_KEY": key, "ONAIR_LISTEN_HOST": host,
           "AWS_ACCESS_KEY_ID": keys[0], "AWS_SECRET_ACCESS_KEY": keys[1], "ONAIR_WORK_DIR": str(work / prefix),
           "ONAIR_LOG_LEVEL": os.environ.get("ONAIR_LOG_LEVEL", "WARNING")}
    return encode_one_publish(env, host, ports, source, "flv", f"rtmp://{host}:{ports['rtmp']}/live/{key}", checkout)


def encode_one_publish(env: dict[str, str], host: str, ports: dict[str, int], source: Path, container: str,
                       ingest_url: str, checkout: Path | None = None) -> EncoderRun:
    """Starts the encoder of this checkout, or (`checkout`) of another one, publishes `source` once in
    real time to `ingest_url`, waits for the encoder to see the publisher leave and to finish encoding
    what it received (an ffmpeg that fell behind the live stream works on after the publisher left;
    stopping it then would leave that work out of the figure), stops it: its CPU seconds, its ffmpeg's,
    and its last status."""
    command = [str(Path(sys.executable).parent / "onair-encoder")]
    if checkout is not None:
        command = [sys.executable, "-m", "onair.encoder.main"]
        env = {**env, "PYTHONPATH": str(checkout)}
    encoder = subprocess.Popen(
        [*command, "--rtmp-port", str(ports["rtmp"]), "--srt-port", str(ports["srt"]),
         "--status-port", str(ports["status"])], env=env)  # fmt: skip
    status_url = f"http://{host}:{ports['status']}/status"

    def status() -> dict[str, object]:
        with urllib.request.urlopen(status_url, timeout=2) as response:
            document: dict[str, object] = json.load(response)
            return document

    wait_for(lambda: status(), 20, "the encoder")
    startup = tree_cpu_seconds(encoder.pid)
    publisher = subprocess.Popen(["ffmpeg", "-v", "error", "-nostdin", "-re", "-i", str(source), "-c", "copy",
                                  "-f", container, ingest_url])  # fmt: skip
    wait_for(lambda: status()["state"] == "live", 20, "the publisher to connect")
    session = ffmpeg_children(encoder.pid)  # the ffmpeg encoding this publish
    sampler = CpuSampler(session)
    publisher.wait()
    wait_for(lambda: status()["state"] == "reconnecting", 20, "the end of the stream")
    wait_for(lambda: not session & ffmpeg_children(encoder.pid), 120, "the encoder to finish the stream")
    final = status()
    encoder.send_signal(signal.SIGTERM)
    return EncoderRun(cpu_seconds_of(encoder) - startup, sampler.total(), final, startup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60, help="length of the source (default 60)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the runs (default 2)")
    parser.add_argument("--baseline", type=Path, help="another checkout whose encoder runs in every round as well")
    args = parser.parse_args()
    per_round: dict[str, list[float]] = {"encoder": [], "single": [], "separate": []}  # CPU seconds, by round
    if args.baseline:
        per_round["baseline"] = []
    encoders = [side for side in per_round if side in ("encoder", "baseline")]
    ffmpeg_cpu = dict.fromkeys(encoders, 0.0)
    startup_cpu = dict.fromkeys(encoders, 0.0)
    finals: dict[str, list[dict[str, Any]]] = {side: [] for side in encoders}
    single_segments: list[int] = []
    with tempfile.TemporaryDirectory(prefix="onair-bench-") as temporary:
        work = Path(temporary)
        source = make_source(work, args.seconds)
        (work / "weed").mkdir()
        weed, endpoint, keys = start_seaweedfs(work / "weed")
        try:
            print(f"source: 1280x720@{FPS} x264 + AAC, {args.seconds} s, paced in real time; ladder: "
                  + ", ".join(f"{n} {b // 1000} kb/s" for n, _, _, b in RENDITIONS), flush=True)
            for number in range(1, args.rounds + 1):
                out = work / f"round-{number}"
                for side in list(per_round) if number % 2 else reversed(per_round):
                    if side in encoders:
                        checkout = args.baseline.resolve() if side == "baseline" else None
                        run = run_encoder(source, out, endpoint, keys, f"{side}-{number}", checkout)
                        seconds = run.cpu
                        ffmpeg_cpu[side] += run.ffmpeg_cpu
                        startup_cpu[side] += run.startup_cpu
                        finals[side].append(run.final)
                    elif side == "single":
                        seconds = run_single(source, out)
                        # What the encoder's segment counts are checked against: the whole source's.
                        single_segments = [(out / "single" / name / "index.m3u8").read_text().count("#EXTINF")
                                           for name, *_ in RENDITIONS]
                    else:
                        seconds = run_separate(source, out)
                    per_round[side].append(seconds)
                    print(f"  round {number}/{args.rounds}: {side:8} CPU {seconds:6.1f} s", flush=True)
            decode_cpu = run_decode_only(source)
        finally:
            stop_child(weed)
    cpu = {side: sum(seconds) for side, seconds in per_round.items()}
    encoder_cpu, single_cpu, separate_cpu = cpu["encoder"], cpu["single"], cpu["separate"]
    rounds = f"{args.rounds} round{'s' if args.rounds > 1 else ''}"
    for side in encoders:
        segments = [[r["segmentsWritten"] for r in final["renditions"]] for final in finals[side]]
        print(f"{side:9} CPU {cpu[side]:7.1f} s  ({rounds}; its ffmpeg {ffmpeg_cpu[side]:.1f} s, the rest "
              f"{cpu[side] - ffmpeg_cpu[side]:.1f} s; segments per rendition: {segments}, dropped frames "
              f"{[final['droppedFrames'] for final in finals[side]]}; starting, not counted: "
              f"{startup_cpu[side]:.1f} s)")
    print(f"single    CPU {single_cpu:7.1f} s  (one hand-written ffmpeg; segments per rendition: {single_segments})")
    print(f"separate  CPU {separate_cpu:7.1f} s  (one ffmpeg per rendition)")
    print(f"encoder / single   = {encoder_cpu / single_cpu:.3f}  (goal <= 1.05)")
    print(f"encoder / separate = {encoder_cpu / separate_cpu:.3f}  (goal <= 0.80)")
    if args.rounds > 1:  # how far a shared host moved the figures from round to round
        for baseline in ("single", "separate"):
            ratios = [e / b for e, b in zip(per_round["encoder"], per_round[baseline], strict=True)]
            print(f"  encoder / {baseline} by round: {', '.join(f'{r:.3f}' for r in ratios)} "
                  f"(median {statistics.median(ratios):.3f})")
    with_startup = encoder_cpu + startup_cpu["encoder"]
    print(f"with the encoder's start-up counted too: / single = {with_startup / single_cpu:.3f}, "
          f"/ separate = {with_startup / separate_cpu:.3f}")
    print(f"encoder's ffmpeg / single = {ffmpeg_cpu['encoder'] / single_cpu:.3f}")
    if args.baseline:
        print(f"encoder / baseline = {encoder_cpu / cpu['baseline']:.3f}  (baseline: {args.baseline})")
    # What sharing one decode can save at most: `single` is the one-decode ladder with nothing else, and
    # `separate` pays for len(RENDITIONS) - 1 more decodes than it. The encoder also saves on the audio.
    saved = (len(RENDITIONS) - 1) * decode_cpu * args.rounds
    print(f"one decode    CPU {decode_cpu:7.1f} s  (the source decoded once, nothing else): sharing it saves "
          f"{saved:.1f} s over the rounds, so a one-decode ladder doing single's work can do at best single / "
          f"(single + {saved:.1f} s) = {single_cpu / (single_cpu + saved):.3f} of one ffmpeg per rendition "
          f"(separate measured {separate_cpu / single_cpu:.3f} x single); the encoder does less than single: "
          f"the audio encoded once for every rendition, x264's threads sized to its CPUs")
    for side in encoders:
        latency = "; ".join(f"p50 {f['upload']['p50LatencyMs']} ms, p99 {f['upload']['p99LatencyMs']} ms"
                            for f in finals[side])
        print(f"segment availability latency (each {side} run): {latency} (goal p99 <= 300 ms)")


if __name__ == "__main__":
    main()
