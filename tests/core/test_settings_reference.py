"""docs/configuration.md's table is generated from the settings definition and matches it."""
import dataclasses
import re
from pathlib import Path

from promptbeat import settings_reference
from promptbeat.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


class RecordingEnviron(dict):
    """An environment that remembers every name looked up in it."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read = set()

    def get(self, name, default=None):
        self.read.add(name)
        return super().get(name, default)


def test_the_committed_table_is_the_generated_one():
    document = settings_reference.DOC.read_text()
    assert settings_reference.with_table(document) == document, "run python3 -m promptbeat.settings_reference"


def test_every_variable_settings_reads_has_a_row_and_every_row_names_a_real_field():
    environ = RecordingEnviron({"SECRET_KEY": "x"})
    Settings.from_environ(environ)
    assert len(environ.read) > 30
    assert environ.read - settings_reference.documented_names() == set()
    fields = {field.name for field in dataclasses.fields(Settings)}
    for row in settings_reference.ROWS:
        for variable in row.variables:
            assert variable.field is None or variable.field in fields, variable


def test_a_default_comes_from_settings_so_changing_one_changes_the_table(monkeypatch):
    field = next(f for f in dataclasses.fields(Settings) if f.name == "min_interval_seconds")
    monkeypatch.setattr(field, "default", 75)
    assert "| `PROMPTBEAT_MIN_INTERVAL_SECONDS` | `75` |" in settings_reference.table()


def test_the_process_roles_own_variables_show_the_defaults_their_code_uses():
    sources = (ROOT / "dev.py").read_text() + (ROOT / "web" / "gunicorn_conf.py").read_text()
    for row in settings_reference.ROWS:
        for variable in row.variables:
            if variable.field is None and variable.default.startswith("`"):
                literal = re.escape(variable.default.strip("`"))
                assert re.search(rf'"{variable.name}", "{literal}"', sources), variable
