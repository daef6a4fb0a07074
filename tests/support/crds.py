"""The Prometheus Operator's CRDs as the operator's generated models have them (PyPI
cloudcoil-models-prometheus-operator), made strict: an unknown field anywhere is refused, as
`kubectl apply --validate=strict` refuses it (the models ignore unknown fields by default)."""

from __future__ import annotations

import functools
import inspect
from types import ModuleType
from typing import Any

import pydantic

# Models hold models up to this deep; each pass rebuilds a level's schema from the strict
# ones below it.
PASSES = 8


@functools.cache
def strict_models() -> ModuleType:
    import cloudcoil.apimachinery as apimachinery
    import cloudcoil.models.prometheus_operator.v1 as v1

    models = [c for module in (v1, apimachinery)
              for _, c in inspect.getmembers(module, inspect.isclass)
              if issubclass(c, pydantic.BaseModel) and c.__module__ == module.__name__]
    for model in models:
        model.model_config["extra"] = "forbid"
    for _ in range(PASSES):
        for model in models:
            model.model_rebuild(force=True)
    return v1


def validate_service_monitor(doc: dict[str, Any]) -> None:
    """Raises pydantic.ValidationError naming what the ServiceMonitor CRD does not allow."""
    strict_models().ServiceMonitor.model_validate(doc)
