"""The OpenAPI 3.1 document, generated from the route table and the pydantic models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from onair.api_gateway.routes import ROUTES, Route
from onair.api_gateway.schemas import ErrorEnvelope, ResultInfo

REF = "#/components/schemas/{model}"
STATUS_TEXT = {400: "Bad request: the errors name the fields", 401: "Missing, invalid or expired token",
               403: "The token may not do this", 404: "Not found", 409: "Conflict", 413: "Body too large",
               415: "Content-Encoding not supported", 422: "Idempotency-Key reused with another body",
               503: "Not ready; retry"}


def _models(routes: tuple[Route, ...]) -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = [ErrorEnvelope, ResultInfo]
    for route in routes:
        for model in (route.body, route.result):
            if model is not None and model not in seen:
                seen.append(model)
    return seen


def build_document(routes: tuple[Route, ...] = ROUTES, server_url: str = "/") -> dict[str, Any]:
    models = _models(routes)
    requests = {r.body for r in routes if r.body is not None}
    keys: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (m, "validation" if m in requests else "serialization") for m in models]
    refs, defs = models_json_schema(keys, ref_template=REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return refs[(model, mode)]  # type: ignore[index]

    paths: dict[str, Any] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "operationId": route.handler, "summary": route.summary, "tags": [route.tag],
            "parameters": [{"name": p.name, "in": p.location, "required": p.required or p.location == "path",
                            "description": p.description, "schema": p.schema} for p in route.params],
            "responses": {},
        }
        if route.role is not None:
            operation["security"] = [{"bearer": []}]
            operation["description"] = f"Needs a token with role {route.role.value} or higher."
        else:
            operation["security"] = []
        if route.body is not None:
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": ref(route.body, "validation")}}}
        if route.raw_response:
            success: dict[str, Any] = {"description": "OK", "content": {route.raw_response: {"schema": {}}}}
        else:
            if route.result is None:
                result: dict[str, Any] = {"type": "null"}
            elif route.result_is_list:
                result = {"type": "array", "items": ref(route.result, "serialization")}
            else:
                result = ref(route.result, "serialization")
            envelope = {"type": "object", "required": ["success", "errors", "messages", "result", "resultInfo"],
                        "properties": {"success": {"type": "boolean"},
                                       "errors": {"type": "array", "items": {"type": "string"}},
                                       "messages": {"type": "array", "items": {"type": "string"}},
                                       "result": result,
                                       "resultInfo": {"$ref": REF.format(model="ResultInfo")}}}
            content: dict[str, Any] = {"application/json": {"schema": envelope}}
            if route.handler == "health":
                content["application/openmetrics-text"] = {"schema": {"type": "string"}}
            success = {"description": "OK" if route.status == 200 else "Created", "content": content}
        operation["responses"][str(route.status)] = success
        if route.idempotent_post:
            operation["responses"]["201"] = success
        error_codes = set(route.errors) | ({413, 415} if route.body is not None else set())
        if route.role is not None and any(p.location == "path" and p.name == "projectId" for p in route.params):
            error_codes |= {503}
        for code in sorted(error_codes):
            operation["responses"][str(code)] = {
                "description": STATUS_TEXT.get(code, "Error"),
                "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorEnvelope")}}}}
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "onair REST gateway", "version": "1",
                 "description": "Live jobs, record jobs and job templates over the onair custom resources. "
                                "Every answer is the envelope {success, errors, messages, result, resultInfo}."},
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    }
