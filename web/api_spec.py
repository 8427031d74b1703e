"""How an API operation is declared: spectree checks its body and query against web.api_models and documents it."""
import copy
import functools

from flask import request
from pydantic import ValidationError
from spectree import Response, SecurityScheme, SecuritySchemeData, SpecTree
from werkzeug.exceptions import BadRequest

from promptbeat.llm.connections import ConnectionInputError
from promptbeat.notify.channels import ChannelInputError
from promptbeat.validation import TaskInputError
from web.api_models import ErrorBody

# 1 MiB holds two prompts at the largest PROMPTBEAT_MAX_PROMPT_CHARS worth using, even \u-escaped.
MAX_BODY_BYTES = 1024 * 1024
# The deepest body promptbeat reads is 2 levels (extra_headers); Python's parser fails past ~1000 levels.
MAX_DEPTH = 20
NOT_JSON = "The request body must be a JSON object (Content-Type: application/json)."
NOT_OBJECT = "The request body must be a JSON object, not a list or a value."
TOO_DEEP = f"The request body is nested more than {MAX_DEPTH} levels deep."
INVALID = "Some fields are invalid."

spec = SpecTree(
    "flask", mode="strict", title="promptbeat API", version="1",
    description="Run LLM prompts on a schedule. Admin tokens may change tasks; viewer tokens may only read.",
    validation_error_model=ErrorBody, page_templates={},
    security_schemes=[SecurityScheme(name="bearer", data=SecuritySchemeData(type="http", scheme="bearer"))],
    security={"bearer": []},
    # Plain model names: a client generated from the document gets Task, not Task.fb5f58f.
    naming_strategy=lambda model: model.__name__, nested_naming_strategy=lambda parent, child: child,
)


class ApiError(Exception):
    """An error answered as JSON with a status code."""

    def __init__(self, status, error, message, fields=None):
        super().__init__(message)
        self.status, self.error, self.message, self.fields = status, error, message, fields


# pydantic's words for a wrong type, in the words promptbeat.validation uses for its own checks.
TYPE_MESSAGES = {
    "extra_forbidden": "Unknown field.",
    "string_type": "Must be text.",
    "string_unicode": "Must be text.",
    "string_pattern_mismatch": "Must not contain NUL characters.",
    "int_type": "Must be a whole number.",
    "int_from_float": "Must be a whole number.",
    "int_parsing": "Must be a whole number.",
    "float_type": "Must be a number.",
    "float_parsing": "Must be a number.",
    "finite_number": "Must be a finite number.",
    "bool_type": "Must be true or false.",
    "bool_parsing": "Must be true or false.",
    "dict_type": "Must be an object.",
    "list_type": "Must be a list.",
    "too_long": "The list is too long.",
}


def field_messages(error: ValidationError):
    """One message per top-level field of the body."""
    fields = {}
    for item in error.errors(include_url=False):
        field = str(item["loc"][0]) if item["loc"] else "body"
        if item["type"] in ("enum", "literal_error"):
            choices = item["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
            message = f"Must be one of: {choices}."
        else:
            message = TYPE_MESSAGES.get(item["type"], item["msg"] + ".")
        fields.setdefault(field, message)
    return fields


class DocumentedResponse(Response):
    """Answer models that go into the document but are not checked on each answer.

    A row stored before a rule existed (or written around the API) may not fit the models; it is still
    served, as every other consumer serves it. That answers conform is checked by the tests
    (tests/web/test_api_contract.py, tests/web/test_api_fuzz.py), not at a cost on every request.
    """

    def find_model(self, code):
        return None


def _parameter_problem(error: ValidationError, query):
    """The message for the first bad query parameter, and {parameter: message} when it names one."""
    first = error.errors()[0]
    field = str(first["loc"][0])
    if first["type"] == "extra_forbidden":
        return f"Unknown query parameter: {field}.", None
    schema = query.model_json_schema()["properties"][field]
    if "minimum" in schema:
        return f"{field} must be a whole number from {schema['minimum']} to {schema['maximum']}.", None
    message = field_messages(error)[field]
    return f"{field}: {message}", {field: message}


def _refuse(query, also_check, req, resp, error, instance, model_adapter):
    """spectree's before-hook: a refused request becomes promptbeat's error shape."""
    if error is None:
        return
    if query is not None:
        raise ApiError(400, "bad_parameter", *_parameter_problem(error, query))
    fields = field_messages(error)
    if also_check is not None:
        # Report every invalid field at once: the domain rules (which only check, never save) run too, with
        # each mistyped field set to true, which they refuse without running the rules built on it.
        try:
            also_check({**request.get_json(), **dict.fromkeys(fields, True)})
        except (TaskInputError, ConnectionInputError, ChannelInputError) as exc:
            fields = {**exc.errors, **fields}
    raise ApiError(422, "validation_failed", INVALID, fields)


def _deeper_than(value, limit):
    level = [value]
    for _ in range(limit):
        level = [child for item in level for child in (item.values() if isinstance(item, dict) else item)
                 if isinstance(child, (dict, list))]
        if not level:
            return False
    return True


def _read_object(optional):
    """Parse the body before spectree sees it: malformed, non-object and too deep are 400s; too large is 413."""
    if optional and not request.get_data():
        return
    if not request.is_json:
        raise ApiError(400, "malformed_json", NOT_JSON)
    try:
        data = request.get_json()
    except BadRequest:
        raise ApiError(400, "malformed_json", NOT_JSON) from None
    except RecursionError:
        raise ApiError(400, "malformed_json", TOO_DEEP) from None
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_json", NOT_OBJECT)
    if _deeper_than(data, MAX_DEPTH):
        raise ApiError(400, "malformed_json", TOO_DEEP)


def operation(operation_id, ok, *, body=None, optional_body=False, query=None, admin=False, item=False,
              conflict=False, also_check=None, tags=()):
    """Declare a view as an API operation.

    ok is {"HTTP_200": Model} (or {"HTTP_204": None}); the error answers it may give are documented from
    the flags: admin (403), item (404 for an unknown id), conflict (409: the item's state forbids it),
    body (400, 413, 422) and query (400).
    """
    errors = ["HTTP_401"] + ["HTTP_403"] * admin + ["HTTP_404"] * item + ["HTTP_409"] * conflict
    if body is not None:
        errors += ["HTTP_400", "HTTP_413"]
    responses = DocumentedResponse(**ok, **{code: ErrorBody for code in errors})
    validate = spec.validate(
        json=body, query=query, resp=responses, tags=tags, operation_id=operation_id,
        validation_error_status=400 if query is not None else 422,
        before=functools.partial(_refuse, query, also_check),
    )

    def decorate(view):
        validated = validate(view)
        if body is None:
            return validated

        @functools.wraps(validated)
        def checked(*args, **kwargs):
            _read_object(optional_body)
            return validated(*args, **kwargs)

        return checked

    return decorate


# Operations that also answer text/csv (their `format=csv` parameter).
CSV_OPERATIONS = {"listRuns"}


def document():
    """The OpenAPI document, with links from each create (201) to every operation on the new item's path."""
    doc = copy.deepcopy(spec.spec)
    paths = doc["paths"]
    for op in (op for operations in paths.values() for op in operations.values()):
        if op.get("operationId") in CSV_OPERATIONS:
            op["responses"]["200"]["content"]["text/csv"] = {"schema": {"type": "string"}}
            op["responses"]["200"]["headers"] = {"X-Next-Cursor": {
                "description": "The cursor of the next page of a CSV answer; absent on the last page.",
                "schema": {"type": "string"}}}
    for path, operations in paths.items():
        for created in (op["responses"]["201"] for op in operations.values() if "201" in op["responses"]):
            item = next(p for p in paths if p.startswith(path + "/{") and p.count("{") == 1)
            name = item[len(path) + 2:item.index("}")]
            created["links"] = {
                op["operationId"]: {"operationId": op["operationId"], "parameters": {name: "$response.body#/id"}}
                for linked, ops in paths.items() if linked.startswith(item) for op in ops.values()}
    return doc
