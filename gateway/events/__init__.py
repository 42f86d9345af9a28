"""Invocations that do not come from an HTTP caller waiting for the answer (issues 15 and 16, not built yet).

What goes here: the durable queue of asynchronous invocations (202 once stored), their retries and maximum event
age, destinations and dead-letter queues, the event source pollers (Kafka, RabbitMQ, SQS-compatible queues) and
schedules. Each hands a payload to the same path as a synchronous invocation (execution.admission, then
execution.invoker) and decides what to do with the outcome: retry, deliver, commit an offset, ack a message.
"""
