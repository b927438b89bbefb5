"""docs/api-reference.md, rendered from the OpenAPI document (itself generated from the route table
and the models), so the reference cannot drift from what the gateway serves.

    python -m onair.api_gateway.apidocs            write docs/api-reference.md
    python -m onair.api_gateway.apidocs --check    exit 1 when the file on disk is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from onair.api_gateway.openapi import build_document

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "api-reference.md"
METHODS = ("get", "post", "put", "patch", "delete")


def _schema_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[1]}`"
    if "anyOf" in schema:
        return " or ".join(_schema_name(s) for s in schema["anyOf"] if s.get("type") != "null")
    if schema.get("type") == "array":
        return f"array of {_schema_name(schema.get('items', {}))}"
    return schema.get("type", "object")


def _result_of(response: dict[str, Any]) -> str:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    result = schema.get("properties", {}).get("result")
    return _schema_name(result) if result else _schema_name(schema) if schema else "-"


def render(document: dict[str, Any]) -> str:
    lines = ["# REST API reference", "",
             "Generated from the gateway's OpenAPI document (`GET /api/openapi.json`) by",
             "`python -m onair.api_gateway.apidocs`; docs/rest-api.md explains auth, lists and errors.", ""]
    for path, item in document["paths"].items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            lines += [f"## {method.upper()} `{path}`", "", operation.get("summary", ""), ""]
            parameters = operation.get("parameters", [])
            if parameters:
                lines += ["| parameter | in | required | type | description |", "| --- | --- | --- | --- | --- |"]
                for parameter in parameters:
                    description = (parameter.get("description") or "").replace("|", "\\|").replace("\n", " ")
                    lines.append(f"| `{parameter['name']}` | {parameter['in']} | {parameter.get('required', False)} | "
                                 f"{_schema_name(parameter.get('schema', {}))} | {description} |")
                lines.append("")
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                lines += [f"Request body: {_schema_name(body)}", ""]
            lines += ["| status | result |", "| --- | --- |"]
            for status, response in operation.get("responses", {}).items():
                lines.append(f"| {status} {response.get('description', '')} | {_result_of(response)} |")
            lines.append("")
    lines += ["## Schemas", ""]
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        lines += [f"### `{name}`", "", (schema.get("description") or "").strip(), ""]
        properties = schema.get("properties", {})
        if properties:
            lines += ["| field | type | description |", "| --- | --- | --- |"]
            for field, spec in properties.items():
                description = (spec.get("description") or "").replace("|", "\\|").replace("\n", " ")
                lines.append(f"| `{field}` | {_schema_name(spec)} | {description} |")
            lines.append("")
        elif "enum" in schema:
            lines += ["One of: " + ", ".join(f"`{v}`" for v in schema["enum"]), ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description="Render docs/api-reference.md from the OpenAPI document.")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render(build_document())
    if args.check:
        if not DOC_PATH.exists() or DOC_PATH.read_text() != text:
            print(f"{DOC_PATH} is stale: run python -m onair.api_gateway.apidocs", file=sys.stderr)
            return 1
        return 0
    DOC_PATH.write_text(text)
    print(f"wrote {DOC_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
