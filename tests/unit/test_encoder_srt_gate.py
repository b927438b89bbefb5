"""The SRT gate's streamid check (pure), and what the encoder does when libsrt is missing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from onair.encoder.srt import Rejection, SrtUnavailable, open_libsrt, parse_access_control, streamid_rejection
from onair.exitcodes import EXIT_BAD_CONFIG

KEY = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


@pytest.mark.parametrize(
    "streamid",
    [
        KEY,
        f"#!::r={KEY},m=publish",
        f"#!::m=publish,r={KEY}",
        f"#!::u=alice,r={KEY},m=publish,h=ingest.example.com,s=abc,t=stream,onair_x=1",
        f"#!::r={KEY}",  # no m: a listener with a single purpose may take it as a publish
    ],
    ids=["bare-key", "access-control", "any-order", "other-keys-ignored", "no-mode"],
)
def test_streamids_that_carry_the_key_may_publish(streamid: str) -> None:
    assert streamid_rejection(streamid, KEY) is None


@pytest.mark.parametrize(
    ("streamid", "rejection"),
    [
        (None, Rejection.FORBIDDEN),
        ("", Rejection.FORBIDDEN),
        ("not-the-key", Rejection.FORBIDDEN),
        (f"{KEY}x", Rejection.FORBIDDEN),
        (KEY.upper(), Rejection.FORBIDDEN),
        (f" {KEY}", Rejection.FORBIDDEN),
        (f"#!::u={KEY},m=publish", Rejection.FORBIDDEN),  # the key must be the resource
        (f"#!::r=other,r={KEY},m=publish", Rejection.FORBIDDEN),  # the first r counts
        (f"#!::r={KEY},m=request", Rejection.BAD_MODE),  # the caller wants to receive: we only take publishers
        (f"#!::r={KEY},m=bidirectional", Rejection.BAD_MODE),
        ("#!::r=other,m=request", Rejection.FORBIDDEN),  # without the key, nothing more is told
        (f"#!:{{r={KEY},m=publish}}", Rejection.BAD_REQUEST),  # the nested form is not supported
        (f"#!::r={KEY},publish", Rejection.BAD_REQUEST),
        (f"#!::r={KEY}," + "x" * 600, Rejection.FORBIDDEN),  # longer than SRT allows
    ],
)
def test_streamids_without_the_key_or_not_publishing_are_refused(streamid: str | None, rejection: Rejection) -> None:
    assert streamid_rejection(streamid, KEY) == rejection


def test_a_caller_whose_passphrase_is_the_key_needs_no_streamid_and_no_other_one() -> None:
    """The stream key as the passphrase, which libsrt checks and which never travels in the clear: no
    streamid then, rather than one that shows the key to whoever sees the handshake."""
    assert streamid_rejection(None, KEY, key_is_passphrase=True) is None
    assert streamid_rejection("", KEY, key_is_passphrase=True) is None
    assert streamid_rejection(KEY, KEY, key_is_passphrase=True) is None
    assert streamid_rejection("not-the-key", KEY, key_is_passphrase=True) == Rejection.FORBIDDEN
    assert streamid_rejection(f"#!::r={KEY},m=request", KEY, key_is_passphrase=True) == Rejection.BAD_MODE


def test_access_control_streamid_parses_into_its_pairs() -> None:
    assert parse_access_control("#!::u=alice,r=live/one,m=publish") == {"u": "alice", "r": "live/one", "m": "publish"}
    assert parse_access_control("#!::r=a=b") == {"r": "a=b"}  # only the first = separates
    assert parse_access_control(KEY) is None
    with pytest.raises(ValueError):
        parse_access_control("#!::=x")


def test_rejection_codes_are_srt_access_control_codes() -> None:
    """access_control.h: SRT_REJX_BAD_REQUEST, _FORBIDDEN, _BAD_MODE, _CONFLICT."""
    assert [int(code) for code in Rejection] == [1400, 1403, 1405, 1409]


def test_a_missing_libsrt_is_a_clear_error_naming_the_package() -> None:
    with pytest.raises(SrtUnavailable, match=r"libsrt1\.5-gnutls"):
        open_libsrt(("libsrt-not-here.so.9",))


def test_without_libsrt_an_srt_job_exits_as_a_configuration_that_can_never_work() -> None:
    """The encoder process itself, in an image without libsrt (the library names point nowhere): exit 2
    with one error line, not a crash-loop traceback."""
    config = {"kind": "LiveJob", "namespace": "ns", "name": "job", "attempt": 1, "template": None, "clip": None,
              "spec": {"jobTemplateId": 1, "input": {"serverType": "SRT"}, "destination": {"bucket": "media"}},
              "storage": {"endpoint": "http://127.0.0.1:9", "bucket": "media", "prefix": "p", "region": "x"}}
    program = ("from onair.encoder import srt, main; srt.LIBSRT_NAMES = (); "
               "srt.LIBSRT_SONAMES = ('libsrt-not-here.so.9',); main.main([])")
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
        env={"ONAIR_JOB_CONFIG": json.dumps(config), "ONAIR_STREAM_KEY": KEY, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == EXIT_BAD_CONFIG, result.stderr
    assert "libsrt" in result.stderr and "Traceback" not in result.stderr
