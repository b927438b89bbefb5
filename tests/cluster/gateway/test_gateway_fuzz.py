"""schemathesis against /api/openapi.json: generated requests (valid and invalid) to every operation
of a running gateway; no 5xx, and every answer matches the document."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from gateway_support import Project, RunningGateway

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
MIN_CASES = 2000


def test_schemathesis_finds_no_server_errors(gateway: RunningGateway, project: Project, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    # Pin the project so generated requests reach the handlers (a random GUID only ever finds a 404);
    # everything else - ids, queries, bodies, headers - is generated.
    config.write_text(f'[parameters]\n"path.projectId" = "{project.id}"\n"path.version" = "1"\n')
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config), "run",
        f"{gateway.base}/api/openapi.json", "--url", gateway.base,
        "-H", f"Authorization: Bearer {gateway.token('admin')}",
        "--checks", CHECKS, "--max-examples", "110", "--workers", "1", "--seed", "20240601",
        "--generation-database", "none", "--no-color", "--phases", "examples,coverage,fuzzing",
        "--request-timeout", "10", "--suppress-health-check", "all",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, check=False, cwd=tmp_path)
    output = result.stdout + result.stderr
    (tmp_path / "schemathesis.out").write_text(output)
    cases = sum(int(n) for n in re.findall(r"(\d+) generated", output))
    if result.returncode != 0 or cases < MIN_CASES:
        print(output[-6000:])
        print(f"\n--- gateway log ---\n{gateway.process.log_tail(40)}")
    assert result.returncode == 0, "schemathesis found failures (output above)"
    if cases < MIN_CASES:
        pytest.fail(f"only {cases} generated cases (need {MIN_CASES}); output above")
