"""Reading docker-compose.yml as compose does: YAML merge keys, variable interpolation, per-service settings."""
import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, $VAR and the $$ escape.
VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A required variable is missing, as `docker compose config` would report."""


def load(path=COMPOSE_FILE):
    """The compose file as plain data, merge keys resolved, nothing interpolated."""
    return yaml.safe_load(Path(path).read_text())


def compose_schema():
    """The compose specification's JSON schema, as vendored by check-jsonschema."""
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def schema_errors(document):
    """Messages for every place the document breaks the compose specification."""
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def variables_used(text):
    """Names of the variables a compose file interpolates."""
    return {m.group("braced") or m.group("named") for m in VARIABLE.finditer(text) if not m.group("escaped")}


def interpolate(value, environ):
    """Interpolate strings inside value the way compose does, from environ (the shell plus .env)."""
    if isinstance(value, dict):
        return {key: interpolate(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environ) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match):
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("named")
        op, arg = match.group("op"), match.group("arg") or ""
        present = name in environ
        current = environ.get(name, "")
        if op in (":-", "-"):
            return current if (current if op == ":-" else present) else arg
        if op in (":?", "?"):
            if not (current if op == ":?" else present):
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return current
        if op == ":+":
            return arg if current else ""
        if op == "+":
            return arg if present else ""
        return current

    return VARIABLE.sub(replace, value)


def service(document, name, environ):
    """One service, interpolated: its command (a list), environment (a dict) and the rest."""
    resolved = interpolate(document["services"][name], environ)
    environment = resolved.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    resolved["environment"] = {key: "" if value is None else str(value) for key, value in environment.items()}
    return resolved
