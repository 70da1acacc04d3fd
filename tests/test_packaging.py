"""The pip and conda descriptions pin the same versions."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(reqs):
    return dict(re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", r).groups() for r in reqs if "==" in r)


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for name, extra in project["optional-dependencies"].items():
        if name != "all":
            reqs += extra
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_reqs = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip_reqs) == _pins(reqs)
    assert _pins(reqs)["torch"] == "2.14.1" and _pins(reqs)["torchvision"] == "0.29.1"
