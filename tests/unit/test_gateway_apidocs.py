from onair.api_gateway.apidocs import DOC_PATH, render
from onair.api_gateway.openapi import build_document


def test_api_reference_is_generated_from_the_current_openapi_document() -> None:
    assert DOC_PATH.read_text() == render(build_document()), "run: python -m onair.api_gateway.apidocs"


def test_api_reference_lists_every_operation() -> None:
    document = build_document()
    text = DOC_PATH.read_text()
    for path, item in document["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                assert f"## {method.upper()} `{path}`" in text
