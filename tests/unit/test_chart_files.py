"""The chart's and the image's files that need no cluster: the chart's CRD copy is what crdgen writes,
its default JobTemplates and the examples are valid specs, its schema is strict, its dashboard
queries real metric names, and the Dockerfile keeps its promises."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml
from pydantic import ValidationError

from onair import crdgen
from onair.models import JobTemplate, JobTemplateSpec, LiveJob, RecordJob
from onair.operator.config import ENCODER_ENV_SET_BY_OPERATOR

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "onair"
EXAMPLES = ROOT / "examples"
MODELS = {"LiveJob": LiveJob, "RecordJob": RecordJob, "JobTemplate": JobTemplate}


def test_chart_crds_are_up_to_date() -> None:
    stale = crdgen.stale_files(crdgen.generated_files(CHART / "crds", None))
    assert not stale, f"run: python -m onair.crdgen --crd-dir {CHART / 'crds'} (stale: {stale})"


def test_chart_values_schema_describes_job_templates_as_the_crd_does() -> None:
    schema_path = CHART / "values.schema.json"
    stale = crdgen.stale_files(crdgen.generated_files(None, values_schema=schema_path))
    assert not stale, f"run: python -m onair.crdgen --values-schema {schema_path}"
    # What the CRD refuses, the chart refuses before installing anything; and a GPU template is a template.
    spec = json.loads(schema_path.read_text())
    for key in crdgen.VALUES_TEMPLATE_SPEC_PATH:
        spec = spec[key]
    ladder = {"name": "hd", "width": 1280, "height": 720, "fps": 30, "videoBitrate": 3_000_000}
    good = {"id": 1, "name": "HD", "renditions": [ladder], "hardwareAcceleration": "NVENC"}
    assert jsonschema_rs.is_valid(spec, good)
    for bad in ({**good, "playlistWindow": 1}, {**good, "segmentDurationSeconds": 60}, {**good, "colour": "red"},
                {**good, "renditions": [{**ladder, "width": 1281}]}, {**good, "renditions": [{**ladder, "fps": 500}]}):
        assert not jsonschema_rs.is_valid(spec, bad), bad
        with pytest.raises(ValidationError):
            JobTemplateSpec.model_validate(bad)


def test_chart_ships_kopf_peering_crds() -> None:
    docs = [d for d in yaml.safe_load_all((CHART / "crds" / "kopf-peerings.yaml").read_text()) if d]
    names = {d["metadata"]["name"]: d["spec"]["scope"] for d in docs}
    assert names == {"clusterkopfpeerings.kopf.dev": "Cluster", "kopfpeerings.kopf.dev": "Namespaced"}


def test_default_job_templates_are_valid_specs() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    items = values["jobTemplates"]["items"]
    specs = [JobTemplateSpec.model_validate(item["spec"]) for item in items]
    assert len({spec.id for spec in specs}) == len(specs), "template ids must be unique"
    assert sum(1 for spec in specs if spec.is_default) == 1, "exactly one default template"
    assert {item["name"] for item in items} == {"ladder-1080p", "ladder-720p", "passthrough"}


def example_objects() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


@pytest.mark.parametrize(("file", "obj"), example_objects(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_examples_are_valid(file: str, obj: dict[str, Any]) -> None:
    assert "namespace" not in obj["metadata"], f"{file}: examples go into the namespace kubectl is given"
    if obj["kind"] in MODELS:
        MODELS[obj["kind"]].model_validate(obj)
    else:
        assert obj["kind"] == "Secret"


def test_examples_cover_every_kind_of_job() -> None:
    objects = [obj for _, obj in example_objects()]
    server_types = {o["spec"]["input"]["serverType"] for o in objects if o["kind"] == "LiveJob"}
    assert server_types == {"RTMP", "SRT", "HLS"}
    records = [o["spec"] for o in objects if o["kind"] == "RecordJob"]
    assert any("liveJobRef" in r["source"] and "timeRange" in r for r in records), "a clip"
    assert any("streamUrl" in r["source"] for r in records)
    assert any(o["kind"] == "JobTemplate" for o in objects)
    srt = next(o for o in objects if o["kind"] == "LiveJob" and o["spec"]["input"]["serverType"] == "SRT")
    secret = srt["spec"]["input"]["srtPassphraseSecretRef"]
    assert any(o["kind"] == "Secret" and o["metadata"]["name"] == secret["name"] for o in objects)


def schema_objects(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            found.append((path or "<root>", node))
        for key, value in node.items():
            found += schema_objects(value, f"{path}.{key}" if key != "properties" else path)
    elif isinstance(node, list):
        for value in node:
            found += schema_objects(value, path)
    return found


def test_values_schema_rejects_unknown_keys_everywhere() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    objects = schema_objects(schema)
    assert len(objects) > 20
    loose = [path for path, node in objects if node.get("additionalProperties", True) is not False]
    assert not loose, f"objects in values.schema.json that accept any key: {loose}"


def test_values_schema_lists_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def check(value: Any, node: dict[str, Any], path: str) -> None:
        if not isinstance(value, dict) or "properties" not in node:
            return
        for key, child in value.items():
            assert key in node["properties"], f"{path}.{key} is in values.yaml but not in the schema"
            check(child, node["properties"][key], f"{path}.{key}")

    check(values, schema, "")


def test_the_schema_refuses_the_encoder_variables_the_operator_sets() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    name = schema["properties"]["encoder"]["properties"]["extraEnv"]["items"]["properties"]["name"]
    assert set(name["not"]["enum"]) == ENCODER_ENV_SET_BY_OPERATOR


KNOWN_METRICS = re.compile(r"\bonair_[a-z_]+")


def test_dashboard_queries_documented_metrics() -> None:
    dashboard = json.loads((CHART / "files" / "dashboards" / "onair.json").read_text())
    docs = (ROOT / "docs" / "observability.md").read_text()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    for expr in exprs:
        for name in KNOWN_METRICS.findall(expr):
            base = re.sub(r"_(bucket|count|sum|total)$", "", name)
            assert base in docs, f"dashboard uses {name}, not documented in docs/observability.md"


def test_dashboard_filters_by_project_namespace_only_per_job_series() -> None:
    # Only encoder series carry a job's namespace; the operator's and gateway's carry their own.
    dashboard = json.loads((CHART / "files" / "dashboards" / "onair.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            if "$namespace" in target["expr"]:
                names = KNOWN_METRICS.findall(target["expr"])
                assert all(name.startswith("onair_encoder_") for name in names), (panel["title"], names)


def dockerfile_stages() -> list[list[str]]:
    stages: list[list[str]] = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_final_stage_is_slim_and_non_root() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage"
    final = "\n".join(stages[-1])
    assert re.search(r"^USER 10001", final, re.M), "the final stage runs as a non-root uid"
    for tool in ("gcc", "build-essential", "git ", "pip install"):
        assert tool not in final, f"{tool!r} in the final stage"
    assert "ffmpeg" in final and "libnginx-mod-rtmp" in final and "libsrt1.5-gnutls" in final
    assert "COPY --from=build /opt/onair /opt/onair" in final
    scripts = yaml.safe_load(
        re.search(r"\[project\.scripts\]\n(.*?)\n\n", (ROOT / "pyproject.toml").read_text(), re.S).group(1)  # type: ignore[union-attr]
        .replace(" = ", ": "))
    assert set(scripts) == {"onair-operator", "onair-gateway", "onair-encoder"}
    ignored = (ROOT / ".dockerignore").read_text()
    assert ignored.lstrip().startswith("#") and "\n*\n" in ignored, ".dockerignore allows only what the build copies"
