"""NVENC command lines against the real ffmpeg. Without a GPU the encoders cannot open, but ffmpeg
parses every option name and value before it loads CUDA: a command that gets as far as loading
CUDA is one a GPU node would run. With a GPU the same command must encode."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from media_helpers import job_environment, ladder_template, pattern_input

from onair.encoder.config import load_job_config
from onair.encoder.ffmpeg import NVENC_ENCODERS, build_session_argv, session_outputs
from onair.models import JobTemplateSpec

GPU_LADDER = ladder_template(("360p", 640, 360, "H264"), ("270p", 480, 270, "HEVC"), ("180p", 320, 180, "H264"))
# What ffmpeg says when the encoder itself opens and finds no GPU, after every option was accepted.
NO_GPU = ("Cannot load libcuda", "No capable devices found", "No NVENC capable devices found", "CUDA_ERROR")
OPTION_ERRORS = ("Unrecognized option", "Error setting option", "Unable to parse option", "Option not found")


def ffmpeg_has_nvenc() -> bool:
    listing = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30)
    return all(name in listing.stdout for name in NVENC_ENCODERS.values())


@pytest.mark.skipif(not ffmpeg_has_nvenc(), reason="this ffmpeg is built without NVENC")
@pytest.mark.parametrize("profiles", [(None, None), ("high", "main"), ("main", "main10")],
                         ids=["default-profiles", "high-main", "main-main10"])
def test_nvenc_ladder_command_is_accepted_up_to_the_gpu(tmp_path: Path, profiles: tuple[str | None, ...]) -> None:
    source = tmp_path / "source.ts"
    subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-nostdin",
                    *[arg for arg in pattern_input(2) if arg != "-re"], str(source)], check=True, timeout=60)
    template = JobTemplateSpec.model_validate(GPU_LADDER).model_dump(mode="json", by_alias=True)
    for rendition, profile in zip(template["renditions"], profiles, strict=False):
        rendition["profile"] = profile
    config = load_job_config(job_environment(template))
    outputs = session_outputs(config, tmp_path / "out", 1)
    for output in outputs:
        output.directory.mkdir(parents=True, exist_ok=True)
    argv = build_session_argv(config, str(source), outputs, {o.rendition: 0 for o in outputs}, live_listener=False,
                              nvenc=True)
    assert argv.count("h264_nvenc") == 2 and argv.count("hevc_nvenc") == 1

    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)

    assert not any(error in result.stderr for error in OPTION_ERRORS), result.stderr[-2000:]
    if result.returncode != 0:  # no GPU here: it must have failed opening the device, nothing earlier
        assert any(sign in result.stderr for sign in NO_GPU), result.stderr[-2000:]
    else:  # a GPU: every rendition was encoded
        assert all(list(output.directory.glob("seg_*")) for output in outputs)

