"""The OpenAPI document packaged with the generated client: where the facade and the sandbox read the spec."""

from __future__ import annotations

import json
from functools import cache
from typing import Any


@cache
def load_spec() -> dict[str, Any]:
    """The packaged OpenAPI document (`cms_api_client/openapi.json`, written from `openapi/cutmeshort.yaml`)."""
    from importlib.resources import files  # noqa: PLC0415 - on the first call, not on every `import cms_python`

    spec: dict[str, Any] = json.loads(files("cms_api_client").joinpath("openapi.json").read_text(encoding="utf-8"))
    return spec
