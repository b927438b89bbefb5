"""inputClass Single's pure parts: the PAT/PMT parser, the packaging decision, the two command lines,
and the fMP4 bookkeeping of a track (init segments per session, deleted with their last segment)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from waiting import eventually

from onair.encoder.config import JobConfig, load_job_config
from onair.encoder.ffmpeg import build_session_argv, session_outputs
from onair.encoder.passthrough import (
    PROGRAM_SEARCH_BYTES,
    PassthroughProcesses,
    ProgramStreams,
    build_packager_argv,
    build_remux_argv,
    mpeg_crc32,
    packaging_for,
    parse_program,
)
from onair.encoder.playlist import parse_media_playlist
from onair.encoder.tracks import RenditionTrack
from onair.models import AudioSettings

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
PMT_PID = 0x1000


# --- an MPEG-TS writer for the tests: PSI sections in packets, as a muxer writes them --------------


def section(table_id: int, table_id_extension: int, body: bytes) -> bytes:
    """A long-form PSI section (syntax indicator set, current_next set) with its CRC."""
    length = 5 + len(body) + 4
    header = bytes([table_id, 0xB0 | (length >> 8), length & 0xFF, table_id_extension >> 8,
                    table_id_extension & 0xFF, 0xC1, 0x00, 0x00])
    without_crc = header + body
    return without_crc + mpeg_crc32(without_crc).to_bytes(4, "big")


def pat(pmt_pid: int = PMT_PID) -> bytes:
    network = bytes([0x00, 0x00, 0xE0, 0x10])  # program 0: the network PID, not a program
    program = bytes([0x00, 0x01, 0xE0 | (pmt_pid >> 8), pmt_pid & 0xFF])
    return section(0x00, 1, network + program)


def pmt(*streams: tuple[int, bytes]) -> bytes:
    body = bytes([0xE1, 0x00, 0xF0, 0x00])  # PCR PID 0x100, no program descriptors
    for pid, (stream_type, descriptors) in enumerate(streams, start=0x100):
        body += bytes([stream_type, 0xE0 | (pid >> 8), pid & 0xFF, 0xF0 | (len(descriptors) >> 8),
                       len(descriptors) & 0xFF]) + descriptors
    return section(0x02, 1, body)


def packets(pid: int, psi: bytes) -> bytes:
    """`psi` (pointer field 0) cut into as many 188-byte packets as it needs, stuffed with 0xFF."""
    payload = b"\x00" + psi
    out = b""
    for index, offset in enumerate(range(0, len(payload), 184)):
        chunk = payload[offset : offset + 184]
        start = 0x40 if index == 0 else 0x00
        out += bytes([0x47, start | (pid >> 8), pid & 0xFF, 0x10 | (index & 0x0F)]) + chunk.ljust(184, b"\xff")
    return out


def media_packet(pid: int = 0x100) -> bytes:
    return bytes([0x47, 0x40 | (pid >> 8), pid & 0xFF, 0x10]) + b"\x00\x00\x01\xe0" + b"\x00" * 180


def stream(*streams: tuple[int, bytes]) -> bytes:
    return packets(0, pat()) + packets(PMT_PID, pmt(*streams)) + media_packet()


HEVC, H264, AAC, MPEG1_AUDIO, AC3_ATSC, PRIVATE = 0x24, 0x1B, 0x0F, 0x03, 0x81, 0x06


# --- PAT and PMT -----------------------------------------------------------------------------------


def test_the_program_names_the_video_and_audio_codecs() -> None:
    assert parse_program(stream((HEVC, b""), (AAC, b""))) == ProgramStreams("hevc", "aac")
    assert parse_program(stream((H264, b""), (MPEG1_AUDIO, b""))) == ProgramStreams("h264", "mp2/mp3")
    assert parse_program(stream((HEVC, b""), (AC3_ATSC, b""))) == ProgramStreams("hevc", "ac3")
    assert parse_program(stream((H264, b""))) == ProgramStreams("h264", None)  # no audio


def test_private_streams_are_named_by_their_descriptors() -> None:
    opus = bytes([0x05, 4]) + b"Opus"  # registration descriptor
    dvb_eac3 = bytes([0x7A, 1, 0x00])  # DVB enhanced_AC-3_descriptor
    assert parse_program(stream((HEVC, b""), (PRIVATE, opus))) == ProgramStreams("hevc", "opus")
    assert parse_program(stream((HEVC, b""), (PRIVATE, dvb_eac3))) == ProgramStreams("hevc", "eac3")
    assert parse_program(stream((PRIVATE, b""), (AAC, b""))) == ProgramStreams(None, "aac")  # an unnamed private


def test_a_pmt_spanning_packets_is_reassembled() -> None:
    long_descriptor = bytes([0x52, 250]) + b"\x00" * 250  # stream_identifier-sized filler: > one packet
    data = packets(0, pat()) + packets(PMT_PID, pmt((HEVC, long_descriptor), (AAC, b"")))
    assert len(data) == 3 * 188
    assert parse_program(data) == ProgramStreams("hevc", "aac")
    assert parse_program(data[: 2 * 188]) is None  # the PMT's second half has not arrived yet


def test_no_answer_until_both_tables_are_there_and_intact() -> None:
    assert parse_program(b"") is None
    assert parse_program(packets(0, pat())) is None
    assert parse_program(packets(PMT_PID, pmt((HEVC, b""))) + packets(0, pat())) is None  # PMT before its PAT
    corrupt = bytearray(stream((HEVC, b""), (AAC, b"")))
    corrupt[188 + 20] ^= 0x01  # a bit of the PMT's stream loop flipped: its CRC fails
    assert parse_program(bytes(corrupt)) is None


def test_the_stream_may_start_mid_packet() -> None:
    assert parse_program(b"\x12\x47\x00" + stream((HEVC, b""), (AAC, b""))) == ProgramStreams("hevc", "aac")


def test_the_search_limit_fits_what_the_socket_can_hold() -> None:
    # The remux blocks when the socket is full: the peek must be able to see PROGRAM_SEARCH_BYTES of
    # its packet-sized writes (-flush_packets 1), which a socket accounts for per write.
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with reader, writer:
        writer.setblocking(False)
        held = 0
        with contextlib.suppress(BlockingIOError):
            while held < 4 * PROGRAM_SEARCH_BYTES:
                held += writer.send(bytes(188))
        assert len(reader.recv(PROGRAM_SEARCH_BYTES, socket.MSG_PEEK)) == PROGRAM_SEARCH_BYTES


# --- packaging -------------------------------------------------------------------------------------


def test_hevc_goes_to_fmp4_with_hvc1_and_h264_stays_in_mpeg_ts() -> None:
    audio = AudioSettings()
    hevc = packaging_for(ProgramStreams("hevc", "aac"), audio)
    assert hevc.fmp4 and hevc.segment_extension == "m4s"
    assert hevc.codec_args == ["-tag:v", "hvc1", "-bsf:a", "aac_adtstoasc"]  # ADTS framing is not MP4's
    h264 = packaging_for(ProgramStreams("h264", "aac"), audio)
    assert not h264.fmp4 and h264.segment_extension == "ts" and h264.codec_args == []
    assert not packaging_for(ProgramStreams("unknown", "unknown"), audio).fmp4


@pytest.mark.parametrize(("audio", "copied"), [("aac", True), ("mp2/mp3", False), ("ac3", True), ("aac_latm", False),
                                               ("opus", False), ("dts", False), (None, True)])
def test_in_mpeg_ts_audio_players_cannot_play_is_re_encoded_to_aac(audio: str | None, copied: bool) -> None:
    packaging = packaging_for(ProgramStreams("h264", audio), AudioSettings(bitrate=96_000))
    assert not packaging.fmp4 and packaging.codec_args == ([] if copied else ["-c:a", "aac", "-b:a", "96000"])


def test_a_playlist_already_in_fmp4_stays_in_fmp4() -> None:
    # An EXT-X-MAP applies to every later segment: H.264 after HEVC (a reconnect) cannot go back to TS.
    h264 = packaging_for(ProgramStreams("h264", "mp2/mp3"), AudioSettings(bitrate=96_000), fmp4=True)
    assert h264.fmp4 and h264.codec_args == ["-c:a", "aac", "-b:a", "96000"]


@pytest.mark.parametrize("audio", ["mp2/mp3", "aac_latm", "opus", "dts"])
def test_audio_apple_cannot_play_from_fmp4_is_re_encoded_to_aac(audio: str) -> None:
    packaging = packaging_for(ProgramStreams("hevc", audio), AudioSettings(bitrate=96_000))
    assert packaging.codec_args == ["-tag:v", "hvc1", "-c:a", "aac", "-b:a", "96000"]


@pytest.mark.parametrize("audio", ["ac3", "eac3", None])
def test_dolby_audio_and_no_audio_are_copied(audio: str | None) -> None:
    assert packaging_for(ProgramStreams("hevc", audio), AudioSettings()).codec_args == ["-tag:v", "hvc1"]


# --- command lines ---------------------------------------------------------------------------------


def passthrough_config() -> JobConfig:
    spec = {"jobTemplateId": 1, "input": {"serverType": "SRT", "inputClass": "Single"},
            "destination": {"bucket": "media"}}
    envelope = {"kind": "LiveJob", "namespace": "ns", "name": "job", "spec": spec, "template": None,
                "storage": {"endpoint": "http://s3", "bucket": "media", "prefix": "live/job"}}
    return load_job_config({"ONAIR_JOB_CONFIG": json.dumps(envelope), "ONAIR_STREAM_KEY": "k" * 16})


def test_the_remux_copies_the_source_to_mpeg_ts_on_its_stdout() -> None:
    argv = build_remux_argv("srt://127.0.0.9:9000?mode=listener", live_listener=True)
    assert argv[argv.index("-i") + 1] == "srt://127.0.0.9:9000?mode=listener"
    assert argv[argv.index("-c") + 1] == "copy" and argv[-3:] == ["-f", "mpegts", "pipe:1"]
    assert "-filter_complex" not in argv and "-progress" not in argv  # stdout is the media


def test_the_packager_reads_the_remux_and_writes_the_segment_type_of_the_codec(tmp_path: Path) -> None:
    config = passthrough_config()
    outputs = session_outputs(config, tmp_path, 2, passthrough_fmp4=True)
    assert [(output.rendition, output.segment_extension, output.init_name) for output in outputs] == [
        ("source", "m4s", "init_0002.mp4")]
    argv = build_packager_argv(outputs[0], packaging_for(ProgramStreams("hevc", "aac"), AudioSettings()), 4, 17)
    assert argv[argv.index("-i") - 2 : argv.index("-i") + 2] == ["-f", "mpegts", "-i", "pipe:0"]
    assert argv[argv.index("-c") + 1] == "copy" and argv[argv.index("-tag:v") + 1] == "hvc1"
    assert argv[argv.index("-hls_segment_type") + 1] == "fmp4"
    assert argv[argv.index("-start_number") + 1] == "17"
    assert argv[argv.index("-hls_segment_filename") + 1].endswith("seg_%06d.m4s")
    ts = session_outputs(config, tmp_path, 3)
    assert ts[0].segment_extension == "ts" and ts[0].init_name is None
    with pytest.raises(ValueError, match="passthrough"):
        build_session_argv(config, "srt://x", ts, {"source": 0}, live_listener=True)


def test_a_source_passed_through_is_not_claimed_to_have_independent_segments() -> None:
    """Its segments start at the source's own keyframes, which may open a GOP whose leading pictures
    refer to the segment before (x265's default CRA): its playlists, live and event, do not say
    EXT-X-INDEPENDENT-SEGMENTS; the encoder's own renditions (IDRs on the segment grid) do."""
    for independent in (False, True):
        track = RenditionTrack("source", nominal_duration=4, window=6, keep_all=True,
                               independent_segments=independent)
        track.add(4, "seg_000000.ts", T0)
        for text in (track.live_playlist(), track.event_playlist()):
            assert ("#EXT-X-INDEPENDENT-SEGMENTS" in text) == independent, text
            assert parse_media_playlist(text).independent_segments == independent


# --- fMP4 bookkeeping ------------------------------------------------------------------------------


def test_each_session_has_its_own_map_and_a_stored_playlist_resumes_with_it() -> None:
    track = RenditionTrack("source", nominal_duration=2, window=10)
    for session, count in (("init_000000.mp4", 2), ("init_000002.mp4", 2)):
        track.start_session()
        for _ in range(count):
            track.add(2, f"seg_{track.next_sequence:06d}.m4s", T0, session)
    text = track.live_playlist()
    assert text.count("#EXT-X-MAP:") == 2
    assert text.index("#EXT-X-DISCONTINUITY") < text.index('#EXT-X-MAP:URI="init_000002.mp4"')
    # A new Pod continues from the stored playlist: the old sessions keep their maps.
    resumed = RenditionTrack.resume(RenditionTrack("source", nominal_duration=2, window=10), parse_media_playlist(text))
    resumed.start_session()
    resumed.add(2, "seg_000004.m4s", T0, "init_000004.mp4")
    assert [segment.init_uri for segment in resumed.segments] == [
        "init_000000.mp4", "init_000000.mp4", "init_000002.mp4", "init_000002.mp4", "init_000004.mp4"]
    assert resumed.live_playlist().count("#EXT-X-MAP:") == 3


def test_an_init_segment_is_deleted_with_the_last_segment_that_uses_it() -> None:
    track = RenditionTrack("source", nominal_duration=2, window=3)
    deleted_inits: list[str] = []
    for _ in range(5):
        track.start_session()
        init = f"init_{track.next_sequence:06d}.mp4"
        for _ in range(3):
            track.add(2, f"seg_{track.next_sequence:06d}.m4s", T0, init)
            expired = track.take_expired()
            deleted_inits += track.unused_init_segments(expired)
            still_named = {segment.init_uri for segment in track.live_segments}
            assert not still_named & set(deleted_inits)
    assert deleted_inits == ["init_000000.mp4", "init_000003.mp4"]  # the later ones are still in use
    kept = RenditionTrack("source", nominal_duration=2, window=2, keep_all=True)  # a recording keeps them all
    for index in range(6):
        kept.add(2, f"seg_{index:06d}.m4s", T0, "init_000000.mp4")
        assert not kept.unused_init_segments(kept.take_expired())


# --- stopping a session ----------------------------------------------------------------------------

# A remux whose input read does not see SIGINT (blocked on the network): it has written its bytes and
# waits for ever. A packager that reads its input to the end, then closes its "last segment".
STUCK_REMUX = ("import pathlib, signal, sys, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
               "sys.stdout.buffer.write(b'x' * 1000); sys.stdout.flush()\n"
               "pathlib.Path(sys.argv[1]).touch()\ntime.sleep(60)\n")
PACKAGER = ("import pathlib, sys\nread = len(sys.stdin.buffer.read())\n"
            "pathlib.Path(sys.argv[1]).write_text(str(read))\n")


async def test_a_remux_that_ignores_the_interrupt_is_killed_and_the_packager_still_closes_its_segment(
        tmp_path: Path) -> None:
    streaming = tmp_path / "remux streaming"
    processes = await PassthroughProcesses.start([sys.executable, "-c", STUCK_REMUX, str(streaming)], lambda: None)
    closed = tmp_path / "last segment"
    packager = await processes.start_packager([sys.executable, "-c", PACKAGER, str(closed)], lambda: None)
    await eventually(streaming.exists, "the remux to stream, deaf to SIGINT")
    processes.interrupt()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(processes.wait()), 0.5)
    processes.kill_input()
    await asyncio.wait_for(processes.wait(), 10)
    assert packager.returncode == 0 and closed.read_text() == "1000"  # all it was given, closed
