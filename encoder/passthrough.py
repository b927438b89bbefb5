"""inputClass Single: the source passed through (remux, no transcode), packaged by its codec.

Apple's HLS authoring rules put HEVC in fragmented MP4 (`hvc1` sample entries), while H.264 stays
in MPEG-TS. ffmpeg's hls muxer must be told the segment type before it opens, and for a push (RTMP,
SRT) nothing can be probed before the publisher is there, so a passthrough session is two ffmpeg
processes joined by a socket:

    source --> remux ffmpeg (-c copy -f mpegts) --socket--> packager ffmpeg (-f mpegts -i pipe:0 -c copy -f hls)

The encoder peeks (MSG_PEEK: nothing is consumed, and no byte of the media passes through Python) at
the first bytes in the socket, reads the PAT and PMT the remux wrote, and only then starts the
packager on that socket with `-hls_segment_type fmp4` or mpegts. The same path serves RTMP (nginx
play), SRT and pulls, since the remux is the one that reads the source.

Pure parts (the PAT/PMT parser, the packaging decision, the command lines) are unit-tested; the
process pair is at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from onair.models import AudioSettings

from .ffmpeg import SessionOutput, hls_muxer_args, input_args

log = logging.getLogger(__name__)

TS_PACKET = 188
TS_SYNC = 0x47
PAT_PID = 0x0000
# ffmpeg writes SDT, PAT and PMT before the first media packet: a few hundred bytes. Past this many
# bytes with no PMT, the stream is not what we expect: package it as MPEG-TS, as before. Well below
# what the socket holds of the remux's small writes (about 52 KB of 188-byte ones), or the remux
# would block before the peek could see this many.
PROGRAM_SEARCH_BYTES = 16 * 1024
PEEK_INTERVAL_SECONDS = 0.02
# After the packager ended (an error, or the end of the stream) the remux has nobody to write to.
REMUX_EXIT_SECONDS = 3.0

# ISO/IEC 13818-1 stream_type -> ffmpeg codec name (those ffmpeg's mpegts muxer writes, and a few more).
VIDEO_STREAM_TYPES = {0x01: "mpeg1video", 0x02: "mpeg2video", 0x10: "mpeg4", 0x1B: "h264", 0x24: "hevc",
                      0x42: "cavs", 0xD1: "dirac", 0xEA: "vc1"}
AUDIO_STREAM_TYPES = {0x03: "mp2/mp3", 0x04: "mp2/mp3", 0x0F: "aac", 0x11: "aac_latm", 0x81: "ac3", 0x82: "dts",
                      0x83: "truehd", 0x87: "eac3"}
PES_PRIVATE_DATA = 0x06  # the codec is in a descriptor (DVB, and ffmpeg's system_b flag)
REGISTRATION_DESCRIPTOR = 0x05
DESCRIPTOR_CODECS = {0x6A: "ac3", 0x7A: "eac3", 0x7B: "dts"}  # DVB descriptor tags
REGISTERED_CODECS = {b"Opus": "opus", b"AC-3": "ac3", b"EAC3": "eac3", b"HEVC": "hevc", b"AV01": "av1"}
AUDIO_CODECS = {"opus", "ac3", "eac3", "dts", "truehd", "aac", "aac_latm", "mp2/mp3"}

# What fMP4 segments carry: HEVC must be fMP4 (Apple); H.264 keeps MPEG-TS (every player, as before).
FMP4_VIDEO_CODECS = {"hevc"}
# Audio copied into fMP4 as it is. MP2/MP3, AAC-LATM, Opus and anything else are re-encoded to AAC:
# Apple players do not play them from fMP4, and re-encoding the audio alone is cheap.
FMP4_AUDIO_COPY = {"aac", "ac3", "eac3"}
# Audio copied into MPEG-TS as it is; AAC-LATM, Opus, DTS, TrueHD and the unknown are re-encoded to AAC,
# which players play from TS (Apple lists AAC, MP3, AC-3 and E-AC-3; hls.js plays no Opus from TS).
# MPEG-1 Layer II (broadcast contribution feeds) and Layer III share their stream types, and Safari
# plays no MP2: both are re-encoded, which costs little next to the copied video.
TS_AUDIO_COPY = {"aac", "ac3", "eac3"}


@dataclass(frozen=True)
class ProgramStreams:
    """The first video and audio stream of the program, as ffmpeg codec names (None: no such stream;
    "unknown": a stream of a type we do not know)."""

    video: str | None
    audio: str | None


def mpeg_crc32(data: bytes) -> int:
    """CRC-32/MPEG-2 (polynomial 0x04C11DB7, not reflected): 0 over a whole PSI section with its CRC."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        crc &= 0xFFFFFFFF
    return crc


def _aligned_packets(data: bytes) -> Iterator[bytes]:
    """Whole TS packets from the first offset where sync bytes repeat every 188 bytes."""
    start = next(
        (offset for offset in range(min(TS_PACKET, len(data)))
         if data[offset] == TS_SYNC and (offset + TS_PACKET >= len(data) or data[offset + TS_PACKET] == TS_SYNC)),
        None,
    )  # fmt: skip
    if start is None:
        return
    for offset in range(start, len(data) - TS_PACKET + 1, TS_PACKET):
        packet = data[offset : offset + TS_PACKET]
        if packet[0] != TS_SYNC:
            return  # lost sync: what follows is not trusted
        yield packet


class _SectionAssembler:
    """Reassembles the PSI sections of one PID from packet payloads (a section may span packets)."""

    def __init__(self) -> None:
        self.buffer: bytearray | None = None

    def feed(self, payload: bytes, unit_start: bool) -> list[bytes]:
        sections: list[bytes] = []
        if unit_start:
            if not payload:
                return sections
            pointer = payload[0]
            if self.buffer is not None:
                self.buffer += payload[1 : 1 + pointer]
                sections += self._complete()
            self.buffer = bytearray(payload[1 + pointer :])
        elif self.buffer is not None:
            self.buffer += payload
        else:
            return sections  # the middle of a section whose start we never saw
        sections += self._complete()
        return sections

    def _complete(self) -> list[bytes]:
        sections = []
        while self.buffer is not None and len(self.buffer) >= 3:
            if self.buffer[0] == 0xFF:  # stuffing: no more sections in this unit
                self.buffer = None
                break
            length = 3 + (((self.buffer[1] & 0x0F) << 8) | self.buffer[2])
            if len(self.buffer) < length:
                break
            sections.append(bytes(self.buffer[:length]))
            self.buffer = self.buffer[length:]
        return sections


def _payload(packet: bytes) -> tuple[int, bool, bytes] | None:
    """(PID, payload_unit_start, payload) of a TS packet; None for an errored or payload-less packet."""
    if packet[1] & 0x80:  # transport_error_indicator
        return None
    pid = ((packet[1] & 0x1F) << 8) | packet[2]
    unit_start = bool(packet[1] & 0x40)
    adaptation = (packet[3] >> 4) & 0x3
    if adaptation in (0, 2):
        return None
    start = 4 + (1 + packet[4] if adaptation == 3 else 0)
    return pid, unit_start, packet[start:]


def _valid_section(section: bytes, table_id: int) -> bool:
    return len(section) >= 12 and section[0] == table_id and bool(section[5] & 0x01) and mpeg_crc32(section) == 0


def _pmt_pid(pat: bytes) -> int | None:
    """The PMT PID of the first program of a PAT section (program 0 is the network PID, skipped)."""
    entries = pat[8:-4]
    for offset in range(0, len(entries) - 3, 4):
        program = (entries[offset] << 8) | entries[offset + 1]
        if program != 0:
            return ((entries[offset + 2] & 0x1F) << 8) | entries[offset + 3]
    return None


def _descriptors(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + 2 <= len(data):
        tag, length = data[offset], data[offset + 1]
        yield tag, data[offset + 2 : offset + 2 + length]
        offset += 2 + length


def _private_codec(descriptors: bytes) -> str | None:
    for tag, body in _descriptors(descriptors):
        if tag == REGISTRATION_DESCRIPTOR and body[:4] in REGISTERED_CODECS:
            return REGISTERED_CODECS[body[:4]]
        if tag in DESCRIPTOR_CODECS:
            return DESCRIPTOR_CODECS[tag]
    return None


def _program_streams(pmt: bytes) -> ProgramStreams:
    program_info_length = ((pmt[10] & 0x0F) << 8) | pmt[11]
    offset, end = 12 + program_info_length, len(pmt) - 4
    video = audio = None
    while offset + 5 <= end:
        stream_type = pmt[offset]
        info_length = ((pmt[offset + 3] & 0x0F) << 8) | pmt[offset + 4]
        descriptors = pmt[offset + 5 : offset + 5 + info_length]
        offset += 5 + info_length
        if stream_type in VIDEO_STREAM_TYPES:
            video = video or VIDEO_STREAM_TYPES[stream_type]
        elif stream_type in AUDIO_STREAM_TYPES:
            audio = audio or AUDIO_STREAM_TYPES[stream_type]
        elif stream_type == PES_PRIVATE_DATA and (codec := _private_codec(descriptors)):
            if codec in AUDIO_CODECS:
                audio = audio or codec
            else:
                video = video or codec
    return ProgramStreams(video, audio)


def parse_program(data: bytes) -> ProgramStreams | None:
    """The streams of the first program of an MPEG-TS byte stream, from its PAT and PMT (CRC-checked);
    None while `data` does not hold both yet."""
    assemblers: dict[int, _SectionAssembler] = {PAT_PID: _SectionAssembler()}
    pmt_pid: int | None = None
    for packet in _aligned_packets(data):
        parsed = _payload(packet)
        if parsed is None or parsed[0] not in assemblers:
            continue
        pid, unit_start, payload = parsed
        for section in assemblers[pid].feed(payload, unit_start):
            if pid == PAT_PID and pmt_pid is None and _valid_section(section, 0x00):
                pmt_pid = _pmt_pid(section)
                if pmt_pid is not None:
                    assemblers.setdefault(pmt_pid, _SectionAssembler())
            elif pid == pmt_pid and _valid_section(section, 0x02):
                return _program_streams(section)
    return None


# --- packaging ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Packaging:
    """How a passthrough session's segments are written."""

    fmp4: bool
    codec_args: list[str]  # after `-c copy`: the sample entry tag, the audio's bitstream filter or encoder

    @property
    def segment_extension(self) -> str:
        return "m4s" if self.fmp4 else "ts"


def packaging_for(program: ProgramStreams, audio: AudioSettings, fmp4: bool = False) -> Packaging:
    """HEVC (or any source, with `fmp4`: the playlist already holds fMP4 segments): fMP4, HEVC with
    the `hvc1` sample entry (Apple plays HEVC only so: parameter sets in the sample description), AAC
    moved from ADTS framing to the MP4 AudioSpecificConfig, AC-3/E-AC-3 as they are, any other audio
    re-encoded to AAC. Anything else: MPEG-TS, the video copied, and the audio unless TS_AUDIO_COPY
    leaves it out."""
    if program.video not in FMP4_VIDEO_CODECS and not fmp4:
        copied = program.audio is None or program.audio in TS_AUDIO_COPY
        return Packaging(fmp4=False, codec_args=[] if copied else ["-c:a", "aac", "-b:a", str(audio.bitrate)])
    args = ["-tag:v", "hvc1"] if program.video == "hevc" else []
    if program.audio == "aac":
        args += ["-bsf:a", "aac_adtstoasc"]
    elif program.audio is not None and program.audio not in FMP4_AUDIO_COPY:
        args += ["-c:a", "aac", "-b:a", str(audio.bitrate)]
    return Packaging(fmp4=True, codec_args=args)


# Either stream may be missing: a source of sound alone is passed through (a video the remux could not
# label is refused by the pipeline, not dropped).
PASSTHROUGH_MAPS = ["-map", "0:v:0?", "-map", "0:a:0?"]


def build_remux_argv(
    input_url: str, *, live_listener: bool, input_format: str | None = None, ffmpeg: str = "ffmpeg",
    guard_options: Sequence[str] = (),
) -> list[str]:
    """The process that reads the source: its stderr describes the input (statistics, "connected"),
    its stdout is MPEG-TS. Flushed per packet: the packager must see a keyframe as soon as it
    arrives to close the segment before it (otherwise up to 32 KB wait in ffmpeg's output buffer)."""
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "info", "-nostats"]
    argv += input_args(input_url, live_listener=live_listener, input_format=input_format,
                       guard_options=guard_options)
    return [*argv, *PASSTHROUGH_MAPS, "-c", "copy", "-flush_packets", "1", "-f", "mpegts", "pipe:1"]


def build_packager_argv(
    output: SessionOutput, packaging: Packaging, segment_seconds: int, start_number: int, *, ffmpeg: str = "ffmpeg"
) -> list[str]:
    """The process that writes the HLS segments from the remux's MPEG-TS on its stdin."""
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "info", "-nostats", "-progress", "pipe:1"]
    argv += ["-stats_period", "0.5"]
    argv += ["-analyzeduration", "1500000", "-probesize", "2000000", "-f", "mpegts", "-i", "pipe:0"]
    argv += [*PASSTHROUGH_MAPS, "-c", "copy", *packaging.codec_args]
    return argv + hls_muxer_args(output, segment_seconds, start_number)


# --- the processes of a session --------------------------------------------------------------


class SessionProcesses(Protocol):
    """What the pipeline does with a session's ffmpeg: one process (a ladder), or a passthrough's two."""

    def interrupt(self) -> None:
        """Stop reading the input: the last segment is closed and the local playlist written."""

    def kill_input(self) -> None:
        """The input did not stop when interrupted (a read blocked on the network): ended by force. A
        passthrough's packager still reads what was delivered to the end and closes its last segment;
        one ffmpeg dies with its input."""

    def kill(self) -> None: ...

    @property
    def returncode(self) -> int | None: ...


class OneProcess:
    """The single ffmpeg of a transcoding session."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    def interrupt(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGINT)

    def kill_input(self) -> None:
        self.kill()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    @property
    def returncode(self) -> int | None:
        return self.process.returncode



async def _spawn(
    argv: list[str], *, stdin: int, stdout: int, preexec: Callable[[], None], env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, stdin=stdin, stdout=stdout, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # the encoder's SIGTERM must not reach ffmpeg before it stops it itself
        preexec_fn=preexec, env=env,
    )  # fmt: skip


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class PassthroughProcesses:
    """The remux and, once the program is known, the packager of one passthrough session.

    `run()` returns when the packager has exited (or the remux ended before a program was seen).
    `interrupt()` stops the input side: the remux closes the stream, the packager reads its end, closes
    the last segment and writes its playlist, as a single ffmpeg does on SIGINT."""

    def __init__(self, remux: asyncio.subprocess.Process, reader: socket.socket) -> None:
        self.remux = remux
        self.packager: asyncio.subprocess.Process | None = None
        self._reader: socket.socket | None = reader

    @classmethod
    async def start(
        cls, remux_argv: list[str], preexec: Callable[[], None], stdin: int = asyncio.subprocess.DEVNULL,
        env: dict[str, str] | None = None,
    ) -> PassthroughProcesses:
        """Starts the remux (`stdin`: for a source that comes in on the remux's standard input; `env`:
        its environment, None: the encoder's)."""
        reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            remux = await _spawn(remux_argv, stdin=stdin, stdout=writer.fileno(), preexec=preexec, env=env)
        except BaseException:
            reader.close()
            raise
        finally:
            writer.close()  # the remux holds the only writer: its exit is the reader's end of stream
        return cls(remux, reader)

    async def read_program(self) -> ProgramStreams | None:
        """The program the remux writes, peeked at without consuming a byte; None if the remux ended
        first (no publisher, a refused caller, a stop). A stream with no PMT in its first
        PROGRAM_SEARCH_BYTES is reported with unknown streams, and packaged as MPEG-TS."""
        reader = self._reader
        assert reader is not None
        loop = asyncio.get_running_loop()
        seen = -1
        while True:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(reader.fileno(), _resolve, readable)
            try:
                await readable
            finally:
                loop.remove_reader(reader.fileno())
            try:
                data = reader.recv(PROGRAM_SEARCH_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            if not data:
                return None
            program = parse_program(data)
            if program is not None:
                return program
            if len(data) >= PROGRAM_SEARCH_BYTES:
                log.warning("no PMT in the first %d bytes of the remuxed source", len(data))
                return ProgramStreams("unknown", "unknown")
            if self.remux.returncode is not None and len(data) == seen:
                return None  # a peek never sees the end of the stream: the remux is gone, nothing comes
            seen = len(data)
            await asyncio.sleep(PEEK_INTERVAL_SECONDS)  # readable stays true until more bytes arrive

    async def start_packager(self, argv: list[str], preexec: Callable[[], None]) -> asyncio.subprocess.Process:
        reader, self._reader = self._reader, None
        assert reader is not None
        try:
            self.packager = await _spawn(argv, stdin=reader.fileno(), stdout=asyncio.subprocess.PIPE, preexec=preexec)
        finally:
            reader.close()  # the packager holds it now; if it could not start, the remux sees EPIPE
        return self.packager

    def interrupt(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.remux.send_signal(signal.SIGINT)

    def kill_input(self) -> None:
        if self.packager is None:
            self.kill()
        elif self.remux.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.remux.kill()  # its end of the socket closes: the packager reads the end of the stream

    def kill(self) -> None:
        for process in (self.remux, self.packager):
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()

    async def wait(self) -> None:
        """Until the packager exited (and the remux with it), or the remux ended before a packager."""
        if self.packager is not None:
            await self.packager.wait()
            try:
                await asyncio.wait_for(self.remux.wait(), REMUX_EXIT_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.remux.kill()
        await self.remux.wait()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    @property
    def returncode(self) -> int | None:
        """The first failure of the two (the packager exits 0 at the end of a stream that the remux
        lost with an error); 0 when both ended cleanly."""
        codes = [self.remux.returncode, self.packager.returncode if self.packager else 0]
        if None in codes:
            return None
        return next((code for code in codes if code), 0)
