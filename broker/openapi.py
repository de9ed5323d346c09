def openapi_document() -> dict[str, object]:
    return {}
