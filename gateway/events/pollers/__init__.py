"""Event source pollers (issue 16): the runner (runner.py) reads batches from a `Source` (source.py: the contract)
and invokes the mapping's function synchronously; one module per kind of broker (kafka.py, rabbitmq.py, sqs.py)
exposes `source_for(mapping, settings) -> Source`."""
