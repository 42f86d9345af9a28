"""Event source mappings' pollers: the sources (Kafka, RabbitMQ, SQS) behind one contract (source.py)."""
