"""Passthrough (inputClass Single) CPU benchmark: what the second ffmpeg process costs.

A Single session is a remux ffmpeg (source -> MPEG-TS on a socket) and a packager ffmpeg (-> HLS), so
that the segment type can follow the source's codec (HEVC: fMP4). Before, it was one ffmpeg. For an
H.264 and an HEVC 720p30 source with AAC, paced in real time, in one run:
  one        one ffmpeg: source -> -c copy -> hls (the old Single command, same segment type)
  two        the same as remux | packager, joined by a pipe (what the encoder runs)
  encoder    the onair encoder itself, SRT ingest of the same file, upload to SeaweedFS (everything:
             Python, both ffmpegs, boto3)
  baseline   with --baseline DIR: the encoder of another checkout (e.g. `git archive` of the commit
             before this change, whose Single was one ffmpeg writing MPEG-TS) on the same sources
CPU seconds are user + system of each process tree.

    .venv/bin/python hack/bench/passthrough_cpu.py [--seconds 60] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from encoder_ladder import EncoderRun, cpu_seconds_of, encode_one_publish, start_seaweedfs
from localplatform.processes import free_port, stop_child

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from onair.encoder.ffmpeg import SessionOutput, hls_muxer_args
from onair.encoder.passthrough import ProgramStreams, build_packager_argv, packaging_for
from onair.models import AudioSettings

FPS = 30
SEGMENT_SECONDS = 4
CODECS = {
    "h264": ["-c:v", "libx264", "-preset", "veryfast", "-b:v", "4M"],
    "hevc": ["-c:v", "libx265", "-preset", "ultrafast", "-b:v", "3M", "-x265-params", "log-level=error"],
}


def make_source(directory: Path, codec: str, seconds: int) -> Path:
    source = directory / f"source_{codec}.ts"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate={FPS}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
         *CODECS[codec], "-g", str(FPS * 2), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", str(source)],
        check=True,
    )  # fmt: skip
    return source


def output(directory: Path, fmp4: bool) -> SessionOutput:
    directory.mkdir(parents=True, exist_ok=True)
    return SessionOutput("source", directory, "m4s" if fmp4 else "ts", "init_0001.mp4" if fmp4 else None)


def run_one(source: Path, codec: str, work: Path) -> float:
    packaging = packaging_for(ProgramStreams(codec, "aac"), AudioSettings())
    target = output(work / f"one_{codec}", packaging.fmp4)
    argv = ["ffmpeg", "-v", "error", "-nostdin", "-re", "-i", str(source), "-map", "0:v:0", "-map", "0:a:0?",
            "-c", "copy", *packaging.codec_args, *hls_muxer_args(target, SEGMENT_SECONDS, 0)]
    return cpu_seconds_of(subprocess.Popen(argv))


def run_two(source: Path, codec: str, work: Path) -> float:
    packaging = packaging_for(ProgramStreams(codec, "aac"), AudioSettings())
    remux = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-nostdin", "-re", "-i", str(source), "-map", "0:v:0", "-map", "0:a:0?",
         "-c", "copy", "-flush_packets", "1", "-f", "mpegts", "pipe:1"], stdout=subprocess.PIPE)  # fmt: skip
    packager = subprocess.Popen(
        build_packager_argv(output(work / f"two_{codec}", packaging.fmp4), packaging, SEGMENT_SECONDS, 0),
        stdin=remux.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    assert remux.stdout is not None
    remux.stdout.close()
    return cpu_seconds_of(remux) + cpu_seconds_of(packager)


def run_encoder(
    source: Path, work: Path, endpoint: str, keys: tuple[str, str], checkout: Path | None = None
) -> EncoderRun:
    """The encoder of this checkout, or (`checkout`) of another one, ingesting `source` over SRT."""
    host, key = "127.0.0.78", secrets.token_hex(8)
    run = secrets.token_hex(3)
    ports = {name: free_port() for name in ("rtmp", "srt", "status")}
    config = {"kind": "LiveJob", "namespace": "bench", "name": "bench", "attempt": 1, "template": None,
              "spec": {"jobTemplateId": 1, "input": {"serverType": "SRT", "inputClass": "Single"},
                       "destination": {"bucket": "bench"}},
              "storage": {"endpoint": endpoint, "bucket": "bench", "prefix": f"bench/{source.stem}-{run}",
                          "region": "us-east-1"}}
    env = {**os.environ, "ONAIR_JOB_CONFIG": json.dumps(config), "ONAIR_STREAM_KEY": key, "ONAIR_LISTEN_HOST": host,
           "AWS_ACCESS_KEY_ID": keys[0], "AWS_SECRET_ACCESS_KEY": keys[1],
           "ONAIR_WORK_DIR": str(work / f"encoder_{source.stem}_{run}"),
           "ONAIR_LOG_LEVEL": os.environ.get("ONAIR_LOG_LEVEL", "WARNING")}
    srt_url = f"srt://{host}:{ports['srt']}?streamid={key}&passphrase={key}&pbkeylen=16"
    return encode_one_publish(env, host, ports, source, "mpegts", srt_url, checkout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60, help="length of the sources (default 60)")
    parser.add_argument("--baseline", type=Path, help="another checkout whose encoder to measure as well")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onair-bench-") as temporary:
        work = Path(temporary)
        sources = {codec: make_source(work, codec, args.seconds) for codec in CODECS}
        (work / "weed").mkdir()
        weed, endpoint, keys = start_seaweedfs(work / "weed")
        try:
            print(f"sources: 1280x720@{FPS} + AAC, {args.seconds} s, paced in real time", flush=True)
            for codec, source in sources.items():
                one = run_one(source, codec, work)
                two = run_two(source, codec, work)
                run = run_encoder(source, work, endpoint, keys)
                encoder, upload = run.cpu + run.startup_cpu, run.final["upload"]
                print(f"{codec}: one ffmpeg {one:5.2f} s, remux + packager {two:5.2f} s "
                      f"(+{two - one:.2f} s, {(two - one) / args.seconds * 100:.2f}% of a core); "
                      f"encoder in all {encoder:5.2f} s; availability p50 {upload['p50LatencyMs']} ms, "
                      f"p99 {upload['p99LatencyMs']} ms", flush=True)
                if args.baseline:
                    run = run_encoder(source, work, endpoint, keys, args.baseline.resolve())
                    baseline, upload = run.cpu + run.startup_cpu, run.final["upload"]
                    print(f"{codec}: baseline encoder ({args.baseline}) in all {baseline:5.2f} s; availability p50 "
                          f"{upload['p50LatencyMs']} ms, p99 {upload['p99LatencyMs']} ms", flush=True)
        finally:
            stop_child(weed)


if __name__ == "__main__":
    main()
