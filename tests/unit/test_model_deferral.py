"""Every pydantic model is deferred (core/model.py) and every one can be built (issue 11, cold start).

Deferred, a model's validator is built at its first use. An annotation that cannot be resolved (a name imported
only for type checking, a forward reference that is never defined) would then fail in production at the first
request that uses the model, not at import: these tests build every model now.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from pydantic import BaseModel

from core.model import Model

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"


def _every_module() -> list[str]:
    names = []
    for package in ("core", "connectors", "handlers"):
        names += [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(FUNCTIONS / package)])]
    return sorted(names)


def _models() -> list[type[BaseModel]]:
    for name in _every_module():
        importlib.import_module(name)
    found: list[type[BaseModel]] = []
    todo: list[type[BaseModel]] = [BaseModel]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.split(".")[0] in ("core", "connectors", "handlers"):
                found.append(sub)
    return sorted(set(found), key=lambda m: f"{m.__module__}.{m.__qualname__}")


MODELS = _models()


def test_the_models_are_found() -> None:
    names = {m.__name__ for m in MODELS}
    assert {"StepState", "DsrRequest", "Manifest", "Settings", "VendorLimit"} <= names, names


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m.__module__}.{m.__qualname__}")
def test_every_model_is_deferred_and_builds(model: type[BaseModel]) -> None:
    assert issubclass(model, Model), f"{model.__qualname__} derives from BaseModel, not core.model.Model"
    assert model.model_config.get("defer_build") is True
    model.model_rebuild(force=True, raise_errors=True)
    assert model.__pydantic_complete__
    model.model_json_schema()  # serialization and JSON schema resolve too (the OpenAPI document uses them)
