"""Returns the event unchanged: the no-op used by the benchmarks."""


def lambda_handler(event, context):
    return event
