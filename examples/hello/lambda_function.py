"""The smallest useful function: greets the caller by name."""


def lambda_handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    print(f"saying hello to {name}")
    return {"message": f"Hello, {name}!", "requestId": context.aws_request_id}
