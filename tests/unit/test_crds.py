"""The generated CustomResourceDefinitions: up to date, structural, and carrying the CEL rules."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from onair import crdgen, models
from onair.models import CEL_RULES_KEY, GROUP, VERSION, CelRule, JobTemplate, LiveJob, RecordJob
from onair.phases import LIVE_JOB_ENCODER_PHASES

pytestmark = pytest.mark.unit

CRD_FILES = {
    resource.names.kind: crdgen.DEFAULT_CRD_DIR / crdgen.crd_file_name(resource) for resource in crdgen.CUSTOM_RESOURCES
}


@functools.cache
def load_crd(kind: str) -> dict[str, Any]:
    """The CRD file of `kind`, parsed once; tests must not modify it."""
    loaded: dict[str, Any] = yaml.safe_load(CRD_FILES[kind].read_text())
    return loaded


def root_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = load_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (`[]` for list items, `.*` for map values)."""
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from walk(prop, f"{path}.{name}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}.*")


KINDS = sorted(CRD_FILES)
ROOT_FIELDS = {".apiVersion", ".kind", ".metadata"}  # the API server validates these itself


def test_generated_files_are_up_to_date() -> None:
    # `python -m onair.crdgen --docs` rewrites them; run it after changing onair/models.py.
    assert crdgen.main(["--check", "--docs"]) == 0


def test_check_detects_stale_and_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--crd-dir", str(tmp_path), "--docs-path", str(tmp_path / "reference.md"), "--docs"]
    assert crdgen.main([*args, "--check"]) == 1  # nothing written yet
    assert crdgen.main(args) == 0
    assert crdgen.main([*args, "--check"]) == 0
    target = tmp_path / "livejobs.onair.dev.yaml"
    target.write_text(target.read_text().replace("maxLength: 2048", "maxLength: 4096", 1))
    capsys.readouterr()
    assert crdgen.main([*args, "--check"]) == 1
    assert "livejobs.onair.dev.yaml" in capsys.readouterr().err


def test_module_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "onair.crdgen", "--check", "--docs"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_crd_identity(kind: str) -> None:
    crd = load_crd(kind)
    models_by_kind: dict[str, type[models.Resource]] = {
        "LiveJob": LiveJob,
        "RecordJob": RecordJob,
        "JobTemplate": JobTemplate,
    }
    names = models_by_kind[kind].names
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{names.plural}.{GROUP}"
    spec = crd["spec"]
    assert spec["group"] == "onair.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": names.plural,
        "singular": names.singular,
        "shortNames": [names.short_name],
        "categories": ["onair"],
    }
    [version] = spec["versions"]
    assert version["name"] == VERSION
    assert version["served"] is True
    assert version["storage"] is True


def test_short_names() -> None:
    assert {kind: load_crd(kind)["spec"]["names"]["shortNames"] for kind in KINDS} == {
        "JobTemplate": ["jt"],
        "LiveJob": ["lj"],
        "RecordJob": ["rj"],
    }


@pytest.mark.parametrize(("kind", "has_status"), [("LiveJob", True), ("RecordJob", True), ("JobTemplate", False)])
def test_status_subresource(kind: str, has_status: bool) -> None:
    version = load_crd(kind)["spec"]["versions"][0]
    assert (version.get("subresources") == {"status": {}}) is has_status
    assert ("status" in root_schema(kind)["properties"]) is has_status


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        (
            "LiveJob",
            {
                "Phase": ".status.phase",
                "Ready": '.status.conditions[?(@.type=="Ready")].status',
                "Ingest": ".status.urls.ingest",
                "Template": ".spec.jobTemplateId",
                "Online": ".spec.online",
                "Age": ".metadata.creationTimestamp",
            },
        ),
        (
            "RecordJob",
            {
                "Phase": ".status.phase",
                "Progress": ".status.progress",
                "Source": ".spec.source.*",
                "Age": ".metadata.creationTimestamp",
            },
        ),
        (
            "JobTemplate",
            {
                "Id": ".spec.id",
                "Default": ".spec.default",
                "Display Name": ".spec.name",
                "Age": ".metadata.creationTimestamp",
            },
        ),
    ],
)
def test_printer_columns(kind: str, columns: dict[str, str]) -> None:
    printed = load_crd(kind)["spec"]["versions"][0]["additionalPrinterColumns"]
    assert {column["name"]: column["jsonPath"] for column in printed} == columns
    for column in printed:
        assert column["type"] in {"string", "integer", "number", "boolean", "date"}
        assert column["description"]


def field_exists(kind: str, json_path: str) -> bool:
    """Whether a printer column's simple JSON path names a field of the schema."""
    node = root_schema(kind)
    for part in re.sub(r"\[\?\(.*?\)\]", "[]", json_path).strip(".").split("."):
        if part.endswith("[]"):
            node = node["properties"][part[:-2]]["items"]
        elif part == "*":
            return bool(node.get("properties"))
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        else:
            return part == "creationTimestamp" and node.get("type") == "object"
    return True


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns_point_at_fields(kind: str) -> None:
    for column in load_crd(kind)["spec"]["versions"][0]["additionalPrinterColumns"]:
        assert field_exists(kind, column["jsonPath"]), column


# --- structural schema -------------------------------------------------------------------------

FORBIDDEN_KEYWORDS = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "const", "title", "nullable"}


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural(kind: str) -> None:
    for path, node in walk(root_schema(kind)):
        assert not FORBIDDEN_KEYWORDS & node.keys(), f"{kind}{path}: {FORBIDDEN_KEYWORDS & node.keys()}"
        assert "x-kubernetes-preserve-unknown-fields" not in node, f"{kind}{path}: schema everything instead"
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, f"{kind}{path}"
        assert node.get("additionalProperties") is not False, f"{kind}{path}: additionalProperties false"
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(bound, False), bool), f"{kind}{path}: {bound} must be a boolean"
        if node["type"] == "object" and path != ".metadata":
            assert node.get("properties") or isinstance(node.get("additionalProperties"), dict), f"{kind}{path}"
        if "properties" in node and "additionalProperties" in node:
            pytest.fail(f"{kind}{path}: properties and additionalProperties together")


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_is_described(kind: str) -> None:
    schema = root_schema(kind)
    assert schema["description"]
    for path, node in walk(schema):
        if path and path != ".metadata" and not path.endswith(("[]", ".*")):
            assert node.get("description"), f"{kind}{path} has no description"


@pytest.mark.parametrize("kind", KINDS)
def test_strings_and_lists_are_bounded(kind: str) -> None:
    # The API server estimates the worst-case cost of CEL rules from these bounds; an enum bounds a
    # string by its longest value.
    for path, node in walk(root_schema(kind)):
        if node["type"] == "string" and path not in ROOT_FIELDS:
            assert isinstance(node.get("maxLength"), int) or node.get("enum"), f"{kind}{path} has no maxLength"
        if node["type"] == "array":
            assert isinstance(node.get("maxItems"), int), f"{kind}{path} has no maxItems"
        if node["type"] == "object" and "additionalProperties" in node:
            assert isinstance(node.get("maxProperties"), int), f"{kind}{path} has no maxProperties"


@pytest.mark.parametrize("kind", KINDS)
def test_defaults_and_required_are_consistent(kind: str) -> None:
    for path, node in walk(root_schema(kind)):
        for name in node.get("required", []):
            assert name in node["properties"], f"{kind}{path}: required {name} is not a property"
            assert "default" not in node["properties"][name], f"{kind}{path}.{name}: required with a default"
        if "enum" in node and "default" in node:
            assert node["default"] in node["enum"], f"{kind}{path}"


def go_re2_compatible(pattern: str) -> bool:
    """Kubernetes evaluates `pattern` with Go's RE2: no lookaround, no backreferences."""
    return not re.search(r"\(\?[=!<]|\\[1-9]", pattern)


@pytest.mark.parametrize("kind", KINDS)
def test_patterns_are_re2(kind: str) -> None:
    for path, node in walk(root_schema(kind)):
        if "pattern" in node:
            re.compile(node["pattern"])
            assert go_re2_compatible(node["pattern"]), f"{kind}{path}"


def test_enums_and_bounds_come_from_the_models() -> None:
    spec = root_schema("LiveJob")["properties"]["spec"]["properties"]
    assert spec["input"]["properties"]["serverType"]["enum"] == ["RTMP", "SRT", "HLS"]
    assert spec["input"]["properties"]["inputClass"]["enum"] == ["Single", "Standard"]
    assert spec["dvrWindowSeconds"] == {**spec["dvrWindowSeconds"], "minimum": 0, "maximum": 86400, "default": 0}
    assert spec["online"]["default"] is True
    assert spec["schedule"]["properties"]["startDateTime"]["format"] == "date-time"
    assert spec["description"]["maxLength"] == 1024
    renditions = root_schema("JobTemplate")["properties"]["spec"]["properties"]["renditions"]
    assert (renditions["minItems"], renditions["maxItems"]) == (1, 8)
    assert renditions["x-kubernetes-list-type"] == "map"
    assert renditions["x-kubernetes-list-map-keys"] == ["name"]
    width = renditions["items"]["properties"]["width"]
    assert (width["minimum"], width["maximum"], width["multipleOf"]) == (16, 7680, 2)
    audio = root_schema("JobTemplate")["properties"]["spec"]["properties"]["audio"]
    assert audio["default"] == {}
    assert audio["properties"]["sampleRate"]["enum"] == [8000, 16000, 22050, 24000, 32000, 44100, 48000]
    status = root_schema("LiveJob")["properties"]["status"]["properties"]
    assert status["timings"]["maxItems"] == 50
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert status["phase"]["enum"][0] == "Pending"


# --- CEL rules ---------------------------------------------------------------------------------


def cel_rules(kind: str) -> list[tuple[str, dict[str, str]]]:
    return [(path, rule) for path, node in walk(root_schema(kind)) for rule in node.get(CEL_RULES_KEY, [])]


@pytest.mark.parametrize("kind", KINDS)
def test_every_rule_has_a_message_and_a_valid_field_path(kind: str) -> None:
    for path, rule in cel_rules(kind):
        assert rule["rule"] and rule["message"], f"{kind}{path}: {rule}"
        assert set(rule) <= {"rule", "message", "fieldPath", "reason"}
        assert rule.get("reason", "FieldValueInvalid") in {
            "FieldValueInvalid",
            "FieldValueRequired",
            "FieldValueForbidden",
            "FieldValueDuplicate",
        }
        if "fieldPath" in rule:
            node = dict(walk(root_schema(kind)))[path]
            for part in rule["fieldPath"].strip(".").split("."):
                assert part in node.get("properties", {}), f"{kind}{path}: fieldPath {rule['fieldPath']} not found"
                node = node["properties"][part]


def rules_at(kind: str, path: str) -> list[str]:
    return [rule["message"] for rule_path, rule in cel_rules(kind) if rule_path == path]


@pytest.mark.parametrize(
    ("kind", "path", "rule"),
    [
        ("LiveJob", ".spec.input", models.HLS_REQUIRES_URL),
        ("LiveJob", ".spec.input", models.PUSH_FORBIDS_URL),
        ("LiveJob", ".spec.input", models.PASSPHRASE_ONLY_FOR_SRT),
        ("LiveJob", ".spec.input.serverType", models.SERVER_TYPE_IMMUTABLE),
        ("LiveJob", ".spec.schedule", models.FINISH_AFTER_START),
        *[("LiveJob", "", rule) for rule in models.LIVE_JOB_FROZEN_WHILE_RUNNING],
        ("RecordJob", ".spec.source", models.EXACTLY_ONE_SOURCE),
        ("RecordJob", ".spec.source", models.SOURCE_IMMUTABLE),
        ("RecordJob", ".spec.output", models.OUTPUT_IMMUTABLE),
        ("RecordJob", ".spec.timeRange", models.END_AFTER_START),
        ("RecordJob", "", models.RECORD_TEMPLATE_FROZEN_WHILE_RECORDING),
        ("JobTemplate", ".spec.renditions[]", models.PROFILE_MATCHES_CODEC),
        ("JobTemplate", ".spec.id", models.TEMPLATE_ID_IMMUTABLE),
    ],
)
def test_rule_is_in_the_crd(kind: str, path: str, rule: CelRule) -> None:
    assert rule.message in rules_at(kind, path)


def test_every_rule_of_the_models_is_in_a_crd() -> None:
    in_crds = {rule["message"] for kind in KINDS for _, rule in cel_rules(kind)}
    for value in vars(models).values():
        if isinstance(value, CelRule):
            assert value.message in in_crds, value
    for rule in models.LIVE_JOB_FROZEN_WHILE_RUNNING:
        assert rule.message in in_crds


def test_frozen_rules_list_the_encoder_phases() -> None:
    for rule in models.LIVE_JOB_FROZEN_WHILE_RUNNING:
        for phase in LIVE_JOB_ENCODER_PHASES:
            assert f"'{phase}'" in rule.rule
        assert "'Offline'" not in rule.rule and "'Pending'" not in rule.rule


def test_timestamps_are_compared_as_timestamps() -> None:
    # date-time strings are CEL timestamps, so `>` compares instants, not text.
    schedule = root_schema("LiveJob")["properties"]["spec"]["properties"]["schedule"]
    assert schedule["properties"]["finishDateTime"]["format"] == "date-time"
    assert "self.finishDateTime > self.startDateTime" in schedule[CEL_RULES_KEY][0]["rule"]


# --- the converter refuses weak schemas ---------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _UnboundedString(_Strict):
    name: str = Field(description="no maxLength")


class _UnboundedList(_Strict):
    names: list[int] = Field(description="no maxItems")


class _Undescribed(_Strict):
    name: str = Field(max_length=3)


class _Union(_Strict):
    value: int | str = Field(description="two types", max_length=3)


class _FreeForm(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(description="known", max_length=3)


class _Set(_Strict):
    tags: set[Annotated[str, Field(max_length=3)]] = Field(description="unique tags", max_length=3)


class _Fine(_Strict):
    """A model the converter accepts."""

    names: list[Annotated[str, Field(max_length=5)]] = Field(default_factory=list, description="bounded", max_length=2)
    rank: float | None = Field(default=None, description="optional", gt=0)


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        (_UnboundedString, "string without maxLength"),
        (_UnboundedList, "list without maxItems"),
        (_Undescribed, "no description"),
        (_Union, "unions are not structural"),
        (_FreeForm, "free-form object"),
        (_Set, "keywords the CRD cannot carry: uniqueItems"),
    ],
)
def test_converter_refuses(model: type[BaseModel], problem: str) -> None:
    with pytest.raises(crdgen.SchemaError, match=problem):
        crdgen.convert_json_schema(model.model_json_schema(), model.__name__)


def test_converter_output() -> None:
    assert crdgen.convert_json_schema(_Fine.model_json_schema(), "Fine") == {
        "description": "A model the converter accepts.",
        "type": "object",
        "properties": {
            "names": {
                "description": "bounded",
                "type": "array",
                "maxItems": 2,
                "items": {"type": "string", "maxLength": 5},
            },
            "rank": {"description": "optional", "type": "number", "minimum": 0, "exclusiveMinimum": True},
        },
    }


# --- docs --------------------------------------------------------------------------------------


def test_reference_lists_every_field() -> None:
    reference = crdgen.DEFAULT_DOCS_PATH.read_text()
    for kind in KINDS:
        assert f"## {kind}" in reference
        for path, _ in walk(root_schema(kind)):
            if path.startswith((".spec", ".status")) and not path.endswith((".*", "[]")):
                assert f"`{path.lstrip('.')}`" in reference, path
        for path, rule in cel_rules(kind):
            assert rule["message"] in reference, f"{kind}{path}: {rule['message']}"
