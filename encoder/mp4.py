"""MP4 files from recorded HLS segments, with no re-encode: RecordJob `format: mp4` and clips."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from onair.exitcodes import EXIT_BAD_CONFIG, EXIT_INTERRUPTED

from .playlist import Segment
from .upload import S3Store

log = logging.getLogger(__name__)


class Mp4Impossible(Exception):
    """No attempt can ever make this MP4: a segment is gone from the bucket, or the media changes."""


class MissingSegmentError(Mp4Impossible):
    """A segment a playlist names is not in the bucket."""


def join_files(first: Path, second: Path, target: Path) -> Path:
    target.write_bytes(first.read_bytes() + second.read_bytes())
    return target


def fetch_segment(store: S3Store, key: Callable[[str], str], segment: Segment, directory: Path) -> Path:
    """Downloads a segment (and its init segment) into `directory`, unless already there."""
    for uri in filter(None, (segment.init_uri, segment.uri)):
        target = directory / uri
        if not target.exists():
            body = store.get(key(uri))
            if body is None:
                raise MissingSegmentError(f"{key(uri)} is missing from the bucket")
            target.write_bytes(body)
    return directory / segment.uri


def unwritten_mp4s(missing: list[str], impossible: list[str], retried: bool = False) -> tuple[str, int] | None:
    """The status message and exit code of a finish without all its MP4s (None: all written). `missing`:
    renditions whose join failed; `impossible`: "<rendition>: <why>" of those no attempt could make;
    `retried`: this attempt did nothing but finish the files, so another would fail the same way (a join
    longer than the grace period), each fetching the whole recording anew."""
    if impossible:  # the HLS recording stands; its MP4 never can: the job fails, it is not retried
        return f"no MP4 of {'; '.join(impossible)}", EXIT_BAD_CONFIG
    if missing and retried:
        return (f"the MP4 of {', '.join(missing)} could not be written again (see the log); the HLS recording "
                "is complete"), EXIT_BAD_CONFIG
    if missing:  # not complete without the MP4 its status names: the next attempt finishes the files again
        return f"the MP4 of {', '.join(missing)} could not be written (see the log): the next attempt tries again", \
            EXIT_INTERRUPTED
    return None


StreamLayout = tuple[tuple[object, ...], ...]


async def stream_layout(path: Path) -> StreamLayout:
    """The audio and video streams of a media file, as far as one MP4 track can carry them on."""
    process = await asyncio.create_subprocess_exec(
        "ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name,width,height,sample_rate,channels",
        "-of", "json", str(path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    output, _ = await process.communicate()
    streams = json.loads(output or b"{}").get("streams", [])
    # A segment whose audio has not started yet says sample_rate "0", channels 0: not known, not other.
    return tuple((stream.get("codec_type"), stream.get("codec_name"), stream.get("width"), stream.get("height"),
                  None if str(stream.get("sample_rate") or "0") == "0" else stream.get("sample_rate"),
                  stream.get("channels") or None)
                 for stream in streams if stream.get("codec_type") in ("video", "audio"))


def same_media(first: StreamLayout, other: StreamLayout) -> bool:
    """Whether one MP4's tracks can carry both: the same streams, each field equal where both know it."""
    return len(first) == len(other) and all(
        a == b or a is None or b is None
        for one, two in zip(first, other, strict=True) for a, b in zip(one, two, strict=True))


async def write_mp4(paths: list[Path], segments: list[Segment], directory: Path, target: Path, deadline: float) -> bool:
    """Concatenates segments into an MP4 with `-c copy`; False when ffmpeg fails or runs out of time,
    Mp4Impossible when no attempt could make it. The concat demuxer places each file after the
    previous one's duration, so timestamps that restart (a publisher's reconnect, a second attempt
    after an eviction) still make one continuous file. fMP4 segments are joined to their init
    segment first (found next to the segment, or in `directory`)."""
    lines = ["ffconcat version 1.0"]
    sessions: list[tuple[int, Path]] = []  # the first file of each run of segments with no discontinuity
    for index, (segment, path) in enumerate(zip(segments, paths, strict=True)):
        if segment.init_uri:
            init = path.parent / segment.init_uri
            if not init.exists():
                init = directory / segment.init_uri
            path = await asyncio.to_thread(join_files, init, path, directory / f"joined_{index:06d}.mp4")
        lines += [f"file '{path.resolve()}'", f"duration {segment.duration:.6f}"]
        if index == 0 or segment.discontinuity:
            sessions.append((index, path))
    # One MP4 keeps the first file's tracks: a later session with another codec, size or sample rate
    # (a publisher that came back with other settings) would be joined into a broken file.
    layouts = [await stream_layout(path) for _, path in sessions]
    for (index, _), layout in zip(sessions[1:], layouts[1:], strict=True):
        if not same_media(layouts[0], layout):
            raise Mp4Impossible(f"its media changes at segment {index} ({layout}, before it {layouts[0]}): one MP4 "
                                "cannot hold both")
    listing = directory / "concat.txt"
    listing.write_text("\n".join(lines) + "\n")
    process = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "concat", "-safe", "0", "-i", str(listing),
        "-map", "0", "-c", "copy", "-movflags", "+faststart", str(target),
        stderr=asyncio.subprocess.PIPE,
        # The stop that asked for the MP4 may be signalled to the whole process group (an init that
        # forwards it, or a node that signals the group): this ffmpeg must finish regardless.
        start_new_session=True,
    )  # fmt: skip
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), max(1.0, deadline - time.monotonic()))
    except TimeoutError:
        process.kill()
        await process.wait()
        log.error("no %s: joining its segments did not end within the stop's time, the Pod's grace period less "
                  "5 s (for a RecordJob with format mp4, the chart's encoder.mp4RecorderTerminationGracePeriodSeconds)",
                  target.name)
        return False
    if process.returncode != 0:
        log.error("MP4 assembly failed (exit %s): %s", process.returncode, stderr.decode(errors="replace")[-2000:])
    return process.returncode == 0
