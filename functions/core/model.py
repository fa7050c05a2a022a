"""The base of every pydantic model here: its validator is built when the model is first used, not on import.

A model's schema, validator and serializer take about half a millisecond to a few milliseconds to build, and
a handler imports many models it never uses on its path (intake imports the job loop's, the job loop the
operator routes' through shared modules). Deferred, each Lambda pays at its first call for the models that
call uses, and never for the others (issue 11, cold start; bench/bench_cold_start.py reports both).
Subclasses' own `model_config` adds to this one (pydantic merges configuration along the bases).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    model_config = ConfigDict(defer_build=True)
