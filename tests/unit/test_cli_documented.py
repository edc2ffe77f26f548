"""Every CLI command has help and appears in the README; the embedded default config ships
with the package (sqlite-utils' docs test, in spirit)."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import click
from click.testing import CliRunner

from drcheck.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def commands(group: click.Group, prefix: str = "drcheck") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        if command.hidden:
            continue
        found.append((f"{prefix} {name}", command))
        if isinstance(command, click.Group):
            found += commands(command, f"{prefix} {name}")
    return found


def test_every_command_is_in_the_readme_and_has_help():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name, command in commands(cli)
               if not isinstance(command, click.Group) and not re.search(rf"^{re.escape(name)}\b", readme, re.M)]
    assert missing == [], f"commands missing from README.md's command list: {missing}"
    for name, command in commands(cli):
        result = CliRunner().invoke(cli, [*name.split()[1:], "--help"])
        assert result.exit_code == 0 and (command.help or "").strip(), name


def test_the_embedded_default_config_ships_with_the_package():
    packaged = resources.files("drcheck").joinpath("default.toml").read_text()
    assert packaged == (ROOT / "drcheck.toml").read_text()
    result = CliRunner().invoke(cli, ["config", "example"])
    assert result.exit_code == 0 and result.output == packaged


def test_every_rule_is_in_the_readme():
    from drcheck.rules import RULES

    readme = (ROOT / "README.md").read_text()
    missing = [rule for rule in RULES if f"| `{rule}` |" not in readme]
    assert missing == [], f"rules missing from README.md's table: {missing}"
