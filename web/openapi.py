"""The OpenAPI 3.0 document for /api, written by hand to match web.presenters and web.api."""
from promptbeat.validation import MAX_TEMPERATURE, MAX_TOKENS

MAX_ID = 2**31 - 1


def _nullable(schema):
    return {**schema, "nullable": True}


EXECUTION_BRIEF = {
    "type": "object",
    "required": ["id", "task_id", "status", "trigger", "created_at"],
    "properties": {
        "id": {"type": "integer"},
        "task_id": {"type": "integer"},
        "status": {"type": "string", "enum": ["queued", "running", "success", "failed", "skipped"]},
        "trigger": {"type": "string"},
        "model": _nullable({"type": "string"}),
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": _nullable({"type": "string", "format": "date-time"}),
        "finished_at": _nullable({"type": "string", "format": "date-time"}),
        "duration_ms": _nullable({"type": "integer"}),
        "error": _nullable({"type": "string"}),
        "prompt_tokens": _nullable({"type": "integer"}),
        "completion_tokens": _nullable({"type": "integer"}),
        "total_tokens": _nullable({"type": "integer"}),
    },
}
EXECUTION = {**EXECUTION_BRIEF, "properties": {**EXECUTION_BRIEF["properties"], "output": _nullable({"type": "string"})}}
TASK = {
    "type": "object",
    "required": ["id", "name", "prompt", "model", "schedule_type", "timezone", "enabled", "schedule_description"],
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "prompt": {"type": "string"},
        "system_prompt": _nullable({"type": "string"}),
        "model": {"type": "string"},
        "temperature": {"type": "number"},
        "max_tokens": _nullable({"type": "integer"}),
        "schedule_type": {"type": "string"},
        "interval_seconds": _nullable({"type": "integer"}),
        "interval_minutes": _nullable({"type": "number"}),
        "time": _nullable({"type": "string"}),
        "cron": _nullable({"type": "string"}),
        "timezone": {"type": "string"},
        "enabled": {"type": "boolean"},
        "schedule_description": {"type": "string"},
        "next_run_at": _nullable({"type": "string", "format": "date-time"}),
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "last_run": _nullable({"$ref": "#/components/schemas/ExecutionBrief"}),
    },
}
TASK_INPUT = {
    "type": "object",
    "description": "Unknown fields are rejected with 422. interval_* is for schedule_type interval, "
                   "time for fixed_time, cron for crontab.",
    "properties": {
        "name": {"type": "string", "maxLength": 200},
        "prompt": {"type": "string"},
        "system_prompt": _nullable({"type": "string"}),
        "model": {"type": "string", "maxLength": 200},
        "temperature": {"type": "number", "minimum": 0, "maximum": MAX_TEMPERATURE},
        "max_tokens": _nullable({"type": "integer", "minimum": 1, "maximum": MAX_TOKENS}),
        "schedule_type": {"type": "string", "enum": ["interval", "fixed_time", "crontab"]},
        "interval_minutes": {"type": "integer", "minimum": 1},
        "interval_seconds": {"type": "integer", "minimum": 1},
        "time": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
        "cron": {"type": "string"},
        "timezone": {"type": "string"},
        "enabled": {"type": "boolean"},
    },
}
ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "fields": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def _json(schema_name, description):
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}}


def _wrapped(key, schema_name, description, many=False):
    item = {"$ref": f"#/components/schemas/{schema_name}"}
    schema = {"type": "object", "required": [key],
              "properties": {key: {"type": "array", "items": item} if many else item}}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {"default": _json("Error", "An error: 400 malformed, 401 no or bad token, 403 viewer, 404 unknown id, "
                                    "405 wrong method, 422 invalid fields")}
TASK_ID = {"name": "task_id", "in": "path", "required": True,
           "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}
BODY = {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TaskInput"}}}}


def openapi_document():
    """The whole document, as a dict ready for jsonify."""
    task_ops = {
        "get": {"operationId": "getTask", "summary": "Read a task", "parameters": [TASK_ID],
                "responses": {"200": _json("Task", "The task"), **ERRORS}},
        "patch": {"operationId": "updateTask", "summary": "Update a task (partial); a rejected update changes nothing",
                  "parameters": [TASK_ID], "requestBody": BODY,
                  "responses": {"200": _json("Task", "The updated task"), **ERRORS}},
        "delete": {"operationId": "deleteTask", "summary": "Delete a task and its runs", "parameters": [TASK_ID],
                   "responses": {"204": {"description": "Deleted"}, **ERRORS}},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "promptbeat API", "version": "1",
                 "description": "Run LLM prompts on a schedule. Admin tokens may change tasks; viewer tokens may only read."},
        "servers": [{"url": "/api"}],
        "security": [{"bearer": []}],
        "paths": {
            "/tasks": {
                "get": {"operationId": "listTasks", "summary": "List tasks",
                        "responses": {"200": _wrapped("tasks", "Task", "All tasks", many=True), **ERRORS}},
                "post": {"operationId": "createTask", "summary": "Create a task; an enabled interval task runs at once",
                         "requestBody": BODY, "responses": {"201": _json("Task", "The new task"), **ERRORS}},
            },
            "/tasks/{task_id}": task_ops,
            "/tasks/{task_id}/enable": {"post": {
                "operationId": "enableTask", "summary": "Enable; an interval task runs at once", "parameters": [TASK_ID],
                "responses": {"200": _json("Task", "The task"), **ERRORS}}},
            "/tasks/{task_id}/disable": {"post": {
                "operationId": "disableTask", "summary": "Disable", "parameters": [TASK_ID],
                "responses": {"200": _json("Task", "The task"), **ERRORS}}},
            "/tasks/{task_id}/run": {"post": {
                "operationId": "runTask", "summary": "Run now, even when disabled", "parameters": [TASK_ID],
                "responses": {"202": _wrapped("execution", "Execution", "The queued run"), **ERRORS}}},
            "/tasks/{task_id}/executions": {"get": {
                "operationId": "listExecutions", "summary": "Runs, newest first",
                "parameters": [TASK_ID, {"name": "limit", "in": "query", "required": False,
                                         "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}],
                "responses": {"200": _wrapped("executions", "Execution", "The runs", many=True), **ERRORS}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Task": TASK, "TaskInput": TASK_INPUT, "Execution": EXECUTION,
                        "ExecutionBrief": EXECUTION_BRIEF, "Error": ERROR},
        },
    }
