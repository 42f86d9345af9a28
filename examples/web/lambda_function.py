"""A small web app served through its function URL (payload format 2.0): an HTML page at `/`, JSON at `/api/time`,
a 404 elsewhere. `make run` deploys it with a URL (see its function.json) and logs the address to open."""

import html
import json
from datetime import datetime, timezone

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Hello from a function URL</title></head>
<body>
<h1>Hello from a function URL</h1>
<p>{method} {path} &mdash; served by <code>{function}</code>, request <code>{request_id}</code>.</p>
<p id="time">The time is&hellip;</p>
<script>
fetch("api/time").then(r => r.json()).then(t => {{
  document.getElementById("time").textContent = "The time is " + t.time;
}});
</script>
</body>
</html>
"""


def lambda_handler(event, context):
    http = event.get("requestContext", {}).get("http", {})
    method, path = http.get("method", "GET"), event.get("rawPath", "/")
    if path == "/api/time":
        body = {"time": datetime.now(timezone.utc).isoformat(), "query": event.get("queryStringParameters") or {}}
        return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}
    if path == "/":
        page = PAGE.format(
            method=html.escape(method),
            path=html.escape(path),
            function=html.escape(context.function_name),
            request_id=html.escape(context.aws_request_id),
        )
        return {"statusCode": 200, "headers": {"content-type": "text/html; charset=utf-8"}, "body": page}
    not_found = json.dumps({"error": "not found"})
    return {"statusCode": 404, "headers": {"content-type": "application/json"}, "body": not_found}
