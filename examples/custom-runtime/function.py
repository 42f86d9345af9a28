def handler(event, headers):
    """`headers`: the invocation's Lambda-Runtime-* headers (request id, deadline, function ARN, trace id)."""
    print("handling", headers["Lambda-Runtime-Aws-Request-Id"])
    return {"message": f"Hello from a custom runtime, {event.get('name', 'world')}!"}
