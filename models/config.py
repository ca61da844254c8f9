"""The base of every typed configuration: unknown keys and wrong types are errors."""
from pydantic import BaseModel, ConfigDict


class StrictConfig(BaseModel):
    """A frozen pydantic model that refuses unknown keys (a typo in params.yaml is an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)
