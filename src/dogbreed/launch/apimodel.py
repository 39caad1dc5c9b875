"""Requests checked against botocore's own SageMaker service model, before they are sent.

botocore's parameter validation checks types, required members and minimums, but not enums, maximums or patterns:
an ``InferenceAmiVersion`` or ``BatchStrategy`` that is not one of the API's values, a name over its length, an
S3 URI the API's pattern refuses, all went out and came back as a ValidationException (moto takes them all).
Here every member of the request is walked against its shape: unknown members, required ones, enums, lengths,
ranges and patterns (a pattern Python's ``re`` cannot read, such as Java's ``\\p{L}``, is left to AWS).
"""

from __future__ import annotations

import re
from functools import lru_cache

# The SageMaker calls the launchers build themselves; the hook of session.py checks them all.
CHECKED = ("CreateTrainingJob", "CreateHyperParameterTuningJob", "CreateModel", "CreateEndpointConfig", "CreateEndpoint",
           "UpdateEndpoint", "CreateTransformJob")


@lru_cache(maxsize=4)
def service_model(service: str = "sagemaker"):
    import botocore.session  # only where a request is checked

    return botocore.session.get_session().get_service_model(service)


@lru_cache(maxsize=256)
def _pattern(text: str):
    try:
        return re.compile(text)
    except re.error:  # Java's \p{...} classes and the like: AWS checks those
        return None


def problems(operation: str, params: dict, service: str = "sagemaker") -> list[str]:
    """Every way ``params`` breaks ``operation``'s input shape, one short line each (the member's path first)."""
    shape = service_model(service).operation_model(operation).input_shape
    found: list[str] = []
    _walk(shape, params, operation, found)
    return found


def _walk(shape, value, path: str, found: list[str]) -> None:
    kind = shape.type_name
    if kind == "structure":
        _structure(shape, value, path, found)
    elif kind == "list":
        if not isinstance(value, list):
            found.append(f"{path}: a list, not {type(value).__name__}")
            return
        _bounds(shape, len(value), path, "items", found)
        for index, item in enumerate(value):
            _walk(shape.member, item, f"{path}[{index}]", found)
    elif kind == "map":
        if not isinstance(value, dict):
            found.append(f"{path}: a map, not {type(value).__name__}")
            return
        _bounds(shape, len(value), path, "entries", found)
        for key, item in value.items():
            _walk(shape.key, key, f"{path}.key", found)
            _walk(shape.value, item, f"{path}[{key!r}]", found)
    elif kind == "string":
        _string(shape, value, path, found)
    elif kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            found.append(f"{path}: a whole number, not {value!r}")
        else:
            _bounds(shape, value, path, "", found)


def _structure(shape, value, path: str, found: list[str]) -> None:
    if not isinstance(value, dict):
        found.append(f"{path}: a structure, not {type(value).__name__}")
        return
    members = shape.members
    found += [f"{path}.{name}: no such member in the API" for name in value if name not in members]
    found += [f"{path}.{name}: required" for name in shape.required_members if value.get(name) is None]
    for name, item in value.items():
        if name in members and item is not None:
            _walk(members[name], item, f"{path}.{name}", found)


def _string(shape, value, path: str, found: list[str]) -> None:
    if not isinstance(value, str):
        found.append(f"{path}: a string, not {value!r}")
        return
    if shape.enum and value not in shape.enum:
        found.append(f"{path}: {value!r} is not one of the API's values ({', '.join(shape.enum)})")
        return
    _bounds(shape, len(value), path, "characters", found)
    pattern = shape.metadata.get("pattern")
    compiled = _pattern(pattern) if pattern else None
    if compiled is not None and not compiled.fullmatch(value):
        found.append(f"{path}: {value[:80]!r} does not match the API's pattern {pattern}")


def _bounds(shape, size: int, path: str, unit: str, found: list[str]) -> None:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    what = f"{size} {unit}".strip()
    if low is not None and size < low:
        found.append(f"{path}: {what}; the API takes at least {low}")
    if high is not None and size > high:
        found.append(f"{path}: {what}; the API takes at most {high}")
