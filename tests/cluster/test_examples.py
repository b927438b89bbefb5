"""Every manifest under examples/ is accepted by the real API server with the real CRDs (schema, CEL
rules, defaults), first in a server-side dry run, then for real, in a namespace no test operator
watches (x-*), so nothing starts encoding."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.fixture
def example_namespace(crds: None, kubectl: Callable[..., Any]) -> Iterator[str]:
    name = f"x-examples-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_examples_exist() -> None:
    names = {path.name for path in EXAMPLES}
    assert {"livejob-rtmp.yaml", "livejob-srt.yaml", "livejob-hls-pull.yaml", "recordjob.yaml",
            "recordjob-clip.yaml", "jobtemplate.yaml"} <= names


def test_examples_are_accepted(example_namespace: str, kubectl: Callable[..., Any]) -> None:
    for path in EXAMPLES:
        result = kubectl("apply", "--dry-run=server", "-n", example_namespace, "-f", str(path), check=False)
        assert result.returncode == 0, f"{path.name} refused:\n{result.stderr}"

    # Applied for real (the JobTemplate and the Secret first: the jobs refer to them).
    order = sorted(EXAMPLES, key=lambda p: (not p.name.startswith(("jobtemplate", "s3-")), p.name))
    for path in order:
        kubectl("apply", "-n", example_namespace, "-f", str(path))
    expected = {(doc["kind"], doc["metadata"]["name"]) for path in EXAMPLES
                for doc in yaml.safe_load_all(path.read_text()) if doc}
    stored = json.loads(kubectl("get", "livejobs,recordjobs,jobtemplates,secrets", "-n", example_namespace,
                                "-o", "json").stdout)["items"]
    assert expected <= {(o["kind"], o["metadata"]["name"]) for o in stored}

    # The API server filled in the documented defaults.
    rtmp = json.loads(kubectl("get", "livejob", "rtmp-demo", "-n", example_namespace, "-o", "json").stdout)
    assert rtmp["spec"]["input"]["inputClass"] == "Standard"
    clip = json.loads(kubectl("get", "recordjob", "rtmp-demo-highlight", "-n", example_namespace, "-o", "json").stdout)
    assert clip["spec"]["source"] == {"liveJobRef": "rtmp-demo"}


def test_a_broken_example_is_refused(example_namespace: str, kubectl: Callable[..., Any]) -> None:
    """The examples pass because the CEL rules hold, not because nothing is checked."""
    job = yaml.safe_load((ROOT / "examples" / "livejob-rtmp.yaml").read_text())
    job["spec"]["input"]["url"] = "https://origin.example.com/live.m3u8"  # url is HLS-only
    result = kubectl("apply", "--dry-run=server", "-n", example_namespace, "-f", "-", input=json.dumps(job),
                     check=False)
    assert result.returncode != 0 and "only allowed when serverType is HLS" in result.stderr
