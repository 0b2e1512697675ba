"""Regenerate the low-level client `generated/cms_api_client` from `openapi/cutmeshort.yaml`.

    python scripts/generate.py           # rewrite generated/cms_api_client
    python scripts/generate.py --check   # exit 1, naming the files that differ, if it is stale or hand-edited

The generator and ruff (its post-hooks format the output) are pinned in pyproject.toml's `dev` extra;
this script refuses other versions, because they would write different code.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "openapi" / "cutmeshort.yaml"
CONFIG = ROOT / "openapi" / "generator-config.yaml"
TEMPLATES = ROOT / "openapi" / "templates"
TARGET = ROOT / "generated" / "cms_api_client"
PINNED = {"openapi-python-client": "0.28.4", "ruff": "0.17.5"}
# Written by the generator or its hooks, not part of the package.
SCRATCH = {".ruff_cache", "__pycache__"}


def check_pins() -> None:
    for package, pinned in PINNED.items():
        installed = version(package)
        if installed != pinned:
            sys.exit(f"{package} {installed} is installed; this project pins {pinned}: pip install -e '.[dev]'")


def generate_into(folder: Path) -> Path:
    """Run the generator; return the package folder it wrote (inside `folder`)."""
    output = folder / "cms_api_client"
    # The post-hooks call `ruff`: make it the one installed beside this interpreter.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [
        sys.executable, "-m", "openapi_python_client", "generate",
        "--path", str(SPEC),
        "--config", str(CONFIG),
        "--custom-template-path", str(TEMPLATES),
        "--meta", "none",
        "--output-path", str(output),
        "--fail-on-warning",
    ]  # fmt: skip
    subprocess.run(command, check=True, env=env, cwd=folder, stdout=subprocess.DEVNULL)
    for scratch in SCRATCH:
        shutil.rmtree(output / scratch, ignore_errors=True)
    # Marks the package as typed for users of the raw layer; the generator does not write it.
    (output / "py.typed").touch()
    # The spec travels with the package (as JSON: no YAML parser needed), for the sandbox's request checks.
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    (output / "openapi.json").write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return output


def files_in(folder: Path) -> set[Path]:
    return {
        path.relative_to(folder)
        for path in folder.rglob("*")
        if path.is_file() and not SCRATCH.intersection(path.relative_to(folder).parts)
    }


def differences(fresh: Path, checked_in: Path) -> list[str]:
    ours, theirs = files_in(fresh), files_in(checked_in) if checked_in.exists() else set()
    changed = [path for path in ours & theirs if not filecmp.cmp(fresh / path, checked_in / path, shallow=False)]
    return sorted(
        [f"missing: generated/cms_api_client/{path}" for path in ours - theirs]
        + [f"not generated: generated/cms_api_client/{path}" for path in theirs - ours]
        + [f"differs: generated/cms_api_client/{path}" for path in changed]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with generated/ instead of rewriting it")
    args = parser.parse_args()
    check_pins()
    with tempfile.TemporaryDirectory() as scratch:
        fresh = generate_into(Path(scratch))
        if args.check:
            stale = differences(fresh, TARGET)
            for line in stale:
                print(line)
            if stale:
                print("generated/ is stale or was edited by hand: run `python scripts/generate.py`", file=sys.stderr)
                return 1
            print("generated/cms_api_client is up to date with openapi/cutmeshort.yaml")
            return 0
        shutil.rmtree(TARGET, ignore_errors=True)
        TARGET.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(fresh, TARGET)
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
