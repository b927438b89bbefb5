"""The operator's opt-in memory report: SIGUSR1 appends one report to the file ONAIR_HEAP_PROFILE names."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from onair import heapprofile


def test_sigusr1_appends_a_report_of_resident_size_heaps_and_objects(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "heap.txt"
    monkeypatch.setenv(heapprofile.ENV, str(target))
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        heapprofile.install_from_env()
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    text = target.read_text()
    assert text.count("VmRSS:") == 2  # appended, not overwritten
    assert "glibc heap:" in text and "pymalloc:" in text
    assert " dict" in text  # the live objects by type


def test_without_the_variable_nothing_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(heapprofile.ENV, raising=False)
    previous = signal.getsignal(signal.SIGUSR1)
    heapprofile.install_from_env()
    assert signal.getsignal(signal.SIGUSR1) is previous
