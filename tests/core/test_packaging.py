"""pyproject.toml lists every package explicitly (plugins/ is remapped to kvctl_plugins)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_directory_is_listed() -> None:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(conf["tool"]["setuptools"]["packages"])
    found = set()
    for top, name in (("kvctl", "kvctl"), ("plugins", "kvctl_plugins")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join((name, *rel.parts)))
    assert found == listed


def test_every_builtin_plugin_is_registered_and_independent() -> None:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    targets = {v.split(":")[0] for v in conf["project"]["entry-points"]["kvctl.backends"].values()}
    plugin_packages = {f"kvctl_plugins.{p.name}" for p in (ROOT / "plugins").iterdir()
                       if (p / "__init__.py").exists()}
    assert targets == plugin_packages
    contracts = conf["tool"]["importlinter"]["contracts"]
    independent = next(c for c in contracts if c["type"] == "independence")
    assert set(independent["modules"]) == plugin_packages
