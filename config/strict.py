"""The base of every typed configuration: unknown keys and wrong types are errors."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ParamsError(ValueError):
    """params.yaml, an override or a section of it is invalid."""


class StrictConfig(BaseModel):
    """A frozen pydantic model that refuses unknown keys (a typo in params.yaml is an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def describe(error: dict) -> str:
    """One pydantic error as `key.path: message` (a model-level check names its key in the message)."""
    message = error["msg"].removeprefix("Value error, ")
    return f"{'.'.join(map(str, error['loc']))}: {message}" if error["loc"] else message
