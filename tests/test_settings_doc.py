"""docs/configuration.md is the settings reference rendered from `Settings`, kept in step."""

from __future__ import annotations

from pathlib import Path

from service.config import Settings
from service.settings_doc import render

PAGE = Path(__file__).parents[1] / "docs" / "configuration.md"


def test_every_setting_says_what_it_does() -> None:
    undocumented = [name for name, f in Settings.model_fields.items() if not f.description]
    assert undocumented == []


def test_the_configuration_page_is_rendered_from_the_settings() -> None:
    """On failure: python -m service.settings_doc > docs/configuration.md"""
    assert PAGE.read_text() == render()


def test_the_page_lists_each_variable_once() -> None:
    text = PAGE.read_text()
    for name in Settings.model_fields:
        assert text.count(f"| `GRADUAL_{name.upper()}` |") == 1, name
