"""Output schemas: checking one, asking the model for it, and parsing and validating an answer against it."""
import json
from dataclasses import dataclass

import jsonschema
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from promptbeat.outputs import patterns

MAX_SCHEMA_CHARS = 32_000
MAX_SCHEMA_DEPTH = 12
# A validation message quotes the value it is about; a long one is cut.
MAX_MESSAGE_CHARS = 500
EXAMPLE = {
    "type": "object",
    "properties": {"price": {"type": "number"}, "in_stock": {"type": "boolean"}},
    "required": ["price", "in_stock"],
}
INSTRUCTIONS = ("Answer with one JSON value and nothing else (no prose, no code fence). "
                "It must conform to this JSON Schema:\n")


class SchemaError(ValueError):
    """A task's output schema that cannot be used; the message says why."""


class OutputInvalid(ValueError):
    """An answer that is not JSON, or does not conform to the schema; the message says where and what was expected."""


def _pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not patterns.compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator, pattern_properties, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        for key, value in instance.items():
            if patterns.compiled(pattern).search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator, additional, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    known = schema.get("properties", {})
    regexes = [patterns.compiled(p) for p in schema.get("patternProperties", {})]
    extras = [key for key in instance if key not in known and not any(r.search(key) for r in regexes)]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        yield ValidationError(f"Additional properties are not allowed ({', '.join(map(repr, sorted(extras)))} "
                              f"{'was' if len(extras) == 1 else 'were'} unexpected)")


# Draft 2020-12 with every regular expression run by RE2 (promptbeat.outputs.patterns): a schema's
# pattern cannot backtrack a worker into a hang on the model's answer.
Validator = validators.extend(Draft202012Validator, {
    "pattern": _pattern, "patternProperties": _pattern_properties, "additionalProperties": _additional_properties})
# No $ref leaves the schema: nothing is fetched from elsewhere while a run validates its answer.
_REGISTRY = Registry()
_BASE = "urn:promptbeat:output-schema"


def check(value):
    """A schema as stored (None for none); raises SchemaError. Text is read as JSON (the form sends text)."""
    if isinstance(value, str):
        value = value.strip()
    if value in (None, "", {}):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            raise SchemaError(f"Not valid JSON: {exc}.") from None
        if value in (None, {}):
            return None
    if not isinstance(value, dict):
        raise SchemaError("Must be a JSON Schema object, for example " + json.dumps(EXAMPLE) + ".")
    if len(json.dumps(value)) > MAX_SCHEMA_CHARS:
        raise SchemaError(f"The schema is longer than {MAX_SCHEMA_CHARS} characters as JSON.")
    references = _walk(value)
    try:
        Validator.check_schema(value)
    except jsonschema.SchemaError as exc:
        raise SchemaError(f"Not a valid JSON Schema at {_path(exc.absolute_path)}: {_cut(exc.message)}") from None
    except RecursionError:
        raise SchemaError("The schema is nested too deeply to check.") from None
    resolver = _REGISTRY.with_resource(_BASE, DRAFT202012.create_resource(value)).resolver(base_uri=_BASE)
    for reference in references:
        try:
            resolver.lookup(reference)
        except Unresolvable:
            raise SchemaError(f"{_cut(reference)!r} points to nothing in the schema.") from None
    return value


def _walk(schema):
    """Refuse what the metaschema allows but a run cannot use: depth, NUL, references out, RE2-less patterns.

    Returns the $ref values found, for the caller to resolve once the schema is known to be valid.
    """
    stack, references = [(schema, 1)], []
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise SchemaError(f"The schema is nested more than {MAX_SCHEMA_DEPTH} levels deep.")
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            if "\x00" in str(key) or (isinstance(child, str) and "\x00" in child):
                raise SchemaError("The schema must not contain NUL characters.")
            if key in ("$ref", "$dynamicRef") and isinstance(node, dict):
                if not str(child).startswith("#"):
                    raise SchemaError("A $ref must point inside the schema (start with #); nothing is fetched.")
                references.append(str(child))
            if isinstance(node, dict) and key == "$schema" and "2020-12" not in str(child):
                raise SchemaError("Only JSON Schema draft 2020-12 is supported; leave $schema out.")
            if isinstance(node, dict) and key == "pattern" and isinstance(child, str):
                _compiles(child)
            if isinstance(node, dict) and key == "patternProperties" and isinstance(child, dict):
                if "unevaluatedProperties" in node:
                    raise SchemaError("patternProperties cannot be combined with unevaluatedProperties.")
                for pattern in child:
                    _compiles(pattern)
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return references


def _compiles(pattern):
    try:
        patterns.compiled(pattern)
    except patterns.PatternError as exc:
        raise SchemaError(str(exc)) from None


@dataclass(frozen=True)
class Request:
    """How a run asks for structured output: the response_format to send and instructions to add, if any."""

    response_format: dict
    instructions: str | None = None


def request_for(schema, structured_outputs):
    """json_schema where the server takes it, else JSON mode with the schema in the instructions."""
    if structured_outputs:
        return Request({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": False}})
    return Request({"type": "json_object"}, INSTRUCTIONS + json.dumps(schema))


def parse(text, schema):
    """The answer's JSON value, validated against schema; raises OutputInvalid."""
    body = _unfenced((text or "").strip())
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise OutputInvalid("The answer is not usable JSON: it is nested too deeply.") from None
    except ValueError as exc:
        raise OutputInvalid(f"The answer is not valid JSON: {_cut(str(exc))}.") from None
    try:
        error = jsonschema.exceptions.best_match(Validator(schema, registry=_REGISTRY).iter_errors(value))
    except RecursionError:
        raise OutputInvalid("The answer is nested too deeply to validate.") from None
    except Unresolvable as exc:  # a schema stored before its references were checked
        raise OutputInvalid(f"The output schema cannot be applied: {_cut(str(exc))}.") from None
    if error is not None:
        raise OutputInvalid(f"The answer does not match the schema at {error.json_path}: {_cut(error.message)}.")
    return value


def _unfenced(text):
    # Models asked for JSON mode sometimes still wrap it in a Markdown code fence.
    if text.startswith("```") and text.endswith("```") and "\n" in text:
        return text[text.index("\n") + 1:-3].strip()
    return text


def _refuse_constant(name):
    # NaN and Infinity are not JSON, and PostgreSQL would refuse to store them.
    raise ValueError(f"{name} is not a JSON number")


def _path(parts):
    return "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)


def _cut(message):
    return message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS] + "…"
