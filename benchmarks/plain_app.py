"""The baseline: a plain Celery app (stock settings) whose one task makes the same SDK call, nothing else."""
import json
import os
import time

import openai
import redis
from celery import Celery

app = Celery("plain", broker=os.environ["REDIS_URL"])
app.conf.update(task_ignore_result=True, task_default_queue="plain")
_client = _redis = None


@app.task(name="bench.plain_call")
def plain_call(number):
    """One chat completion against the fake server; its start and end go to a Redis list."""
    global _client, _redis
    begun = time.time()
    if _client is None:  # made lazily, so each prefork child builds its own after fork
        _client = openai.OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key="sk-bench", max_retries=0)
        _redis = redis.Redis.from_url(os.environ["REDIS_URL"])
    _client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": f"plain {number}"}])
    _redis.rpush("bench:done", json.dumps([number, begun, time.time()]))
