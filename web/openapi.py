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
        "slot": _nullable({"type": "string", "format": "date-time"}),
        "catch_up": _nullable({"type": "boolean"}),
        "cost_usd": _nullable({"type": "number"}),
        "error_class": _nullable({"type": "string"}),
        "attempt_count": {"type": "integer"},
        "webhook_status": _nullable({"type": "string"}),
    },
}
EXECUTION = {**EXECUTION_BRIEF, "properties": {
    **EXECUTION_BRIEF["properties"],
    "output": _nullable({"type": "string"}),
    "prompt": _nullable({"type": "string"}),
    "attempts": {"type": "array", "items": {"type": "object"}},
    "webhook_attempts": {"type": "array", "items": {"type": "object"}},
}}
MOMENT = _nullable({"type": "string", "format": "date-time"})
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
        "next_runs": {"type": "array", "items": {"type": "string", "format": "date-time"},
                      "description": "The next (up to five) fire times; empty while paused or completed."},
        "status": {"type": "string", "enum": ["active", "paused", "completed"]},
        "pause_note": _nullable({"type": "string"}),
        "run_at": MOMENT,
        "start_at": MOMENT,
        "end_at": MOMENT,
        "max_runs": _nullable({"type": "integer"}),
        "run_count": {"type": "integer"},
        "completed_at": MOMENT,
        "overlap_policy": {"type": "string", "enum": ["skip", "allow"]},
        "catchup_seconds": _nullable({"type": "integer"}),
        "auto_pause_after": _nullable({"type": "integer"}),
        "consecutive_failures": {"type": "integer"},
        "connection_id": _nullable({"type": "integer"}),
        "max_attempts": _nullable({"type": "integer"}),
        "request_timeout_seconds": _nullable({"type": "number"}),
        "max_run_seconds": _nullable({"type": "number"}),
        "webhook_url": _nullable({"type": "string"}),
        "webhook_format": _nullable({"type": "string"}),
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time",
                       "description": "When the task was last changed; its runs do not change it."},
        "last_run": _nullable({"$ref": "#/components/schemas/ExecutionBrief"}),
    },
}
SCHEDULE_PROPERTIES = {
    "schedule_type": {"type": "string", "enum": ["interval", "fixed_time", "crontab", "once"]},
    "interval_minutes": {"type": "integer", "minimum": 1},
    "interval_seconds": {"type": "integer", "minimum": 1},
    "time": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
    "cron": {"type": "string"},
    "timezone": {"type": "string"},
    "run_at": _nullable({"type": "string", "format": "date-time"}),
    "start_at": _nullable({"type": "string", "format": "date-time"}),
    "end_at": _nullable({"type": "string", "format": "date-time"}),
    "max_runs": _nullable({"type": "integer", "minimum": 1}),
    "catchup_seconds": _nullable({"type": "integer", "minimum": 0, "maximum": 7 * 86400}),
}
TASK_INPUT = {
    "type": "object",
    "description": "Unknown fields are rejected with 422. interval_* is for schedule_type interval, "
                   "time for fixed_time, cron for crontab, run_at for once. Dates and times are ISO 8601; "
                   "without an offset they are read in the task's time zone.",
    "properties": {
        "name": {"type": "string", "maxLength": 200},
        "prompt": {"type": "string"},
        "system_prompt": _nullable({"type": "string"}),
        "model": {"type": "string", "maxLength": 200},
        "temperature": {"type": "number", "minimum": 0, "maximum": MAX_TEMPERATURE},
        "max_tokens": _nullable({"type": "integer", "minimum": 1, "maximum": MAX_TOKENS}),
        **SCHEDULE_PROPERTIES,
        "enabled": {"type": "boolean"},
        "overlap_policy": {"type": "string", "enum": ["skip", "allow"]},
        "auto_pause_after": _nullable({"type": "integer", "minimum": 1}),
        "pause_note": _nullable({"type": "string", "maxLength": 1000}),
        "connection_id": _nullable({"type": "integer"}),
        "max_attempts": _nullable({"type": "integer", "minimum": 1, "maximum": 10}),
        "request_timeout_seconds": _nullable({"type": "number"}),
        "max_run_seconds": _nullable({"type": "number"}),
        "webhook_url": _nullable({"type": "string"}),
        "webhook_format": {"type": "string", "enum": ["json", "slack"]},
    },
}
SCHEDULE_INPUT = {"type": "object", "description": "The schedule fields of a task; other fields are ignored.",
                  "properties": SCHEDULE_PROPERTIES}
SCHEDULE_PREVIEW = {
    "type": "object",
    "required": ["description", "next_runs"],
    "properties": {"description": {"type": "string"},
                   "next_runs": {"type": "array", "items": {"type": "string", "format": "date-time"}}},
}
USAGE = {
    "type": "object",
    "required": ["runs", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd"],
    "properties": {"runs": {"type": "integer"}, "prompt_tokens": {"type": "integer"},
                   "completion_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"},
                   "cost_usd": {"type": "number"}, "day": {"type": "string"}, "task_id": {"type": "integer"}},
}
CONNECTION = {
    "type": "object",
    "required": ["id", "name", "base_url", "has_api_key"],
    "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "base_url": _nullable({"type": "string"}),
                   "default_model": _nullable({"type": "string"}),
                   "extra_headers": {"type": "object", "additionalProperties": {"type": "string"}},
                   "has_api_key": {"type": "boolean"}},
}
CONNECTION_INPUT = {
    "type": "object",
    "description": "The key is write-only; an api_key of \"\" removes it. Unknown fields are rejected with 422.",
    "properties": {"name": {"type": "string", "maxLength": 100}, "base_url": {"type": "string"},
                   "api_key": _nullable({"type": "string"}), "default_model": _nullable({"type": "string"}),
                   "extra_headers": {"type": "object", "additionalProperties": {"type": "string"}}},
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
CONNECTION_ID = {"name": "connection_id", "in": "path", "required": True,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}
DAYS = {"name": "days", "in": "query", "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 366, "default": 30}}


def _body(schema_name, required=True):
    return {"required": required,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}}


def _optional_body(properties):
    return {"required": False, "content": {"application/json": {"schema": {"type": "object",
                                                                           "properties": properties}}}}


BODY = _body("TaskInput")
NOTE = _optional_body({"note": _nullable({"type": "string", "maxLength": 1000})})
USAGE_LIST = {"type": "array", "items": {"$ref": "#/components/schemas/Usage"}}


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
                "operationId": "disableTask", "summary": "Disable (pause), with an optional note", "parameters": [TASK_ID],
                "requestBody": NOTE, "responses": {"200": _json("Task", "The task"), **ERRORS}}},
            "/tasks/{task_id}/pause": {"post": {
                "operationId": "pauseTask", "summary": "Pause, with an optional note shown on the task",
                "parameters": [TASK_ID], "requestBody": NOTE,
                "responses": {"200": _json("Task", "The task"), **ERRORS}}},
            "/tasks/{task_id}/resume": {"post": {
                "operationId": "resumeTask", "summary": "Resume; runs missed while paused are not fired",
                "parameters": [TASK_ID], "responses": {"200": _json("Task", "The task"), **ERRORS}}},
            "/tasks/{task_id}/run": {"post": {
                "operationId": "runTask", "summary": "Run now, even when paused; honours the overlap policy "
                                                     "unless allow_overlap", "parameters": [TASK_ID],
                "requestBody": _optional_body({"allow_overlap": {"type": "boolean", "default": False}}),
                "responses": {"202": _wrapped("execution", "Execution", "The queued run"), **ERRORS}}},
            "/tasks/{task_id}/usage": {"get": {
                "operationId": "taskUsage", "summary": "A task's tokens and estimated cost per UTC day",
                "parameters": [TASK_ID, DAYS],
                "responses": {"200": {"description": "Usage", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["task_id", "total", "per_day"],
                    "properties": {"task_id": {"type": "integer"}, "total": {"$ref": "#/components/schemas/Usage"},
                                   "per_day": USAGE_LIST}}}}}, **ERRORS}}},
            "/schedule/preview": {"post": {
                "operationId": "previewSchedule", "summary": "The next five runs and the words for an unsaved "
                                                            "schedule (read-only; viewers may call it)",
                "requestBody": _body("ScheduleInput"),
                "responses": {"200": _json("SchedulePreview", "The preview"), **ERRORS}}},
            "/usage": {"get": {
                "operationId": "usage", "summary": "Tokens and estimated cost per task and per UTC day",
                "parameters": [DAYS],
                "responses": {"200": {"description": "Usage", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["total", "per_day", "per_task"],
                    "properties": {"total": {"$ref": "#/components/schemas/Usage"}, "per_day": USAGE_LIST,
                                   "per_task": USAGE_LIST}}}}}, **ERRORS}}},
            "/connections": {
                "get": {"operationId": "listConnections", "summary": "List connections (never their keys)",
                        "responses": {"200": _wrapped("connections", "Connection", "All connections", many=True),
                                      **ERRORS}},
                "post": {"operationId": "createConnection", "summary": "Add an OpenAI-compatible endpoint",
                         "requestBody": _body("ConnectionInput"),
                         "responses": {"201": _json("Connection", "The new connection"), **ERRORS}},
            },
            "/connections/{connection_id}": {
                "get": {"operationId": "getConnection", "summary": "Read a connection", "parameters": [CONNECTION_ID],
                        "responses": {"200": _json("Connection", "The connection"), **ERRORS}},
                "patch": {"operationId": "updateConnection", "summary": "Update a connection (partial)",
                          "parameters": [CONNECTION_ID], "requestBody": _body("ConnectionInput"),
                          "responses": {"200": _json("Connection", "The connection"), **ERRORS}},
                "delete": {"operationId": "deleteConnection", "summary": "Delete; its tasks use the default endpoint",
                           "parameters": [CONNECTION_ID], "responses": {"204": {"description": "Deleted"}, **ERRORS}},
            },
            "/connections/{connection_id}/test": {"post": {
                "operationId": "testConnection", "summary": "List the endpoint's models once, to check it answers",
                "parameters": [CONNECTION_ID],
                "responses": {"200": {"description": "The outcome", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["ok", "message"],
                    "properties": {"ok": {"type": "boolean"}, "message": {"type": "string"},
                                   "error_class": {"type": "string"},
                                   "models": {"type": "array", "items": {"type": "string"}},
                                   "model_count": {"type": "integer"},
                                   "missing_model": _nullable({"type": "string"})}}}}}, **ERRORS}}},
            "/tasks/{task_id}/executions": {"get": {
                "operationId": "listExecutions", "summary": "Runs, newest first",
                "parameters": [TASK_ID, {"name": "limit", "in": "query", "required": False,
                                         "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}],
                "responses": {"200": _wrapped("executions", "Execution", "The runs", many=True), **ERRORS}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Task": TASK, "TaskInput": TASK_INPUT, "Execution": EXECUTION,
                        "ExecutionBrief": EXECUTION_BRIEF, "Error": ERROR, "ScheduleInput": SCHEDULE_INPUT,
                        "SchedulePreview": SCHEDULE_PREVIEW, "Usage": USAGE, "Connection": CONNECTION,
                        "ConnectionInput": CONNECTION_INPUT},
        },
    }
