"""The wheel holds the two import packages and nothing else of the checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from ..support import ROOT


def test_wheel_holds_exactly_the_facade_and_the_generated_client(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", tmp_path, ROOT],
        check=True,
    )
    (wheel,) = tmp_path.glob("cms_python_client-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert top_level == {"cms_python", "cms_api_client"}
    assert "cms_python/py.typed" in names
    assert "cms_api_client/py.typed" in names
    assert "cms_api_client/openapi.json" in names
