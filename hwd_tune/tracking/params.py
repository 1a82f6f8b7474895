"""A config as MLflow params: every value under its dotted key, plus the aliases `tau`, `mu`, `beta`,
`method`, `dataset`, `student`, `teacher`, `max_iters` that the UI and searches use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
from pydantic import BaseModel, ValidationError

from hwd_tune.config import METHOD_PARAMS
from hwd_tune.tracking.store import redacted_if_uri, truncated

PARAM_ALIASES = ("tau", "mu", "beta", "method", "dataset", "student", "teacher", "max_iters")


def flatten_params(config: Mapping[str, Any] | BaseModel) -> dict[str, str]:
    """Every config value under its dotted key (`schedule.max_iters`), plus the top-level aliases.

    Aliases: `tau`, `mu`, `beta` (from method.params, the method's defaults filled in), `method`,
    `dataset`, `student`, `max_iters`, and `teacher` (its source, or "none" for method "none").
    Values are strings: lists/tuples as their str, URIs redacted, long values truncated with a marker.
    """
    if isinstance(config, BaseModel):
        config = config.model_dump(mode="json")
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a mapping or a pydantic config, got {type(config).__name__}")
    raw = dict(config)
    raw = _with_method_defaults(raw)
    flat: dict[str, str] = {}
    _flatten_into(flat, "", raw)

    def nested(*keys: str) -> Any:
        node: Any = raw
        for key in keys:
            if not isinstance(node, Mapping) or key not in node:
                return None
            node = node[key]
        return node

    method_params = nested("method", "params")
    aliases: dict[str, Any] = {}
    if isinstance(method_params, Mapping):
        aliases.update({name: method_params[name] for name in ("tau", "mu", "beta") if name in method_params})
    method_name = nested("method", "name")
    aliases["method"] = method_name
    aliases["dataset"] = nested("data", "name")
    aliases["student"] = nested("student", "arch")
    aliases["teacher"] = "none" if method_name == "none" else (nested("teacher", "source") or nested("teacher", "arch"))
    aliases["max_iters"] = nested("schedule", "max_iters")
    for name, value in aliases.items():
        if value is not None:
            flat[name] = param_value(value)
    return flat


def _with_method_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with method.params completed by the method's published defaults (when they validate)."""
    method = raw.get("method")
    if not isinstance(method, Mapping) or method.get("name") not in METHOD_PARAMS:
        return raw
    params = method.get("params") or {}
    if not isinstance(params, Mapping):
        return raw
    try:
        resolved = METHOD_PARAMS[method["name"]].model_validate(dict(params)).model_dump(mode="json")
    except ValidationError:
        return raw  # log what was given; the config loader reports the error
    return {**raw, "method": {**method, "params": resolved}}


def _flatten_into(flat: dict[str, str], prefix: str, value: Any) -> None:
    if isinstance(value, Mapping) and (value or not prefix):
        for key, child in value.items():
            _flatten_into(flat, f"{prefix}.{key}" if prefix else str(key), child)
    else:
        flat[prefix] = param_value(value)


def param_value(value: Any) -> str:
    return truncated(redacted_if_uri(str(value)), MAX_PARAM_VAL_LENGTH)
