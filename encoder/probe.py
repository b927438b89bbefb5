"""What a media segment holds, read by ffprobe: the CODECS, RESOLUTION and FRAME-RATE that a master
playlist states for the variant the segment belongs to."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .mp4 import join_files
from .playlist import codec_tag


@dataclass(frozen=True)
class Probed:
    codecs: tuple[str, ...]  # RFC 6381 tags of its streams, as CODECS lists them; none when unreadable
    resolution: tuple[int, int] | None
    frame_rate: float | None


AUDIO_TAG_STARTS = ("mp4a.", "Opus", "ac-3", "ec-3")


def merge_probes(probes: Sequence[Probed]) -> Probed:
    """What segments of several sessions (a source that reconnected) hold together: every codec of any
    of them, as CODECS must list them (RFC 8216 4.3.4.2), video first; the largest picture and rate."""
    tags = list(dict.fromkeys(tag for probed in probes for tag in probed.codecs))
    resolutions = [probed.resolution for probed in probes if probed.resolution]
    frame_rates = [probed.frame_rate for probed in probes if probed.frame_rate]
    return Probed(tuple(sorted(tags, key=lambda tag: tag.startswith(AUDIO_TAG_STARTS))),
                  max(resolutions, key=lambda size: size[0] * size[1]) if resolutions else None,
                  max(frame_rates) if frame_rates else None)


async def probe_segment(path: Path, init: Path | None, preexec_fn: Callable[[], None] | None = None) -> Probed:
    """ffprobe of `path`, joined behind `init` for an fMP4 media segment (which has no moov). The segment
    file (a copy made for the probe) is removed afterwards."""
    probed = [path]
    try:
        if init is not None:
            path = await asyncio.to_thread(join_files, init, path, path.with_name(f"{path.name}.mp4"))
            probed.append(path)
        process = await asyncio.create_subprocess_exec(
            "ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, preexec_fn=preexec_fn,
        )  # fmt: skip
        output, _ = await process.communicate()
    finally:
        for leftover in probed:
            leftover.unlink(missing_ok=True)
    try:
        streams = json.loads(output or b"{}").get("streams", [])
    except ValueError:
        streams = []
    tags = tuple(tag for stream in streams if (tag := codec_tag(stream)))
    video = next((stream for stream in streams if stream.get("codec_type") == "video"), None)
    resolution = (int(video["width"]), int(video["height"])) if video and video.get("width") else None
    frame_rate = frame_rate_of(video.get("avg_frame_rate") or video.get("r_frame_rate")) if video else None
    return Probed(tags, resolution, frame_rate)


def frame_rate_of(text: str | None) -> float | None:
    if not text or text in ("0/0",):
        return None
    numerator, _, denominator = text.partition("/")
    try:
        value = float(numerator) / float(denominator or 1)
    except (ValueError, ZeroDivisionError):
        return None
    return round(value, 3) if value > 0 else None
