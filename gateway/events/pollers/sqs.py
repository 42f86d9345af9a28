"""SQS-compatible queues as an event source: the `Source` (pollers/source.py) of a mapping whose EventSourceArn is
a queue's ARN (`arn:aws:sqs:<region>:<account>:<name>`), reached at GATEWAY_SQS_ENDPOINT (AWS itself or a
compatible server: ElasticMQ, moto, ...), requests signed for the ARN's region.

What it does, as Lambda's SQS poller does:
- `open` finds the queue's URL (GetQueueUrl by name and owner account).
- `fetch` is one ReceiveMessage: at most 10 messages (SQS's cap; the runner calls again for more), long polling for
  up to `max_wait` seconds (whole seconds, at most 20: SQS's cap; under a second is a short poll), every system
  attribute and message attribute. Each message becomes Lambda's `aws:sqs` record (`record_of`); its `item_id` is
  the messageId, its `group` the MessageGroupId of a FIFO queue's message (order is kept per group) and "" otherwise.
  A received message stays in the queue, invisible for the queue's visibility timeout.
- `settle` deletes the succeeded messages (DeleteMessageBatch, 10 a call) and leaves the failed ones: they come back
  when their visibility timeout ends, with ApproximateReceiveCount one higher (and to the queue's own dead-letter
  queue after its maxReceiveCount, if it has a redrive policy). `discard` deletes.
Nothing is deleted before `settle` or `discard` says so: a crash anywhere before means the message comes back
(at least once, never lost). A delete the queue refuses for one message (a receipt handle that has expired because
the function ran past the visibility timeout) is logged and that message comes back: a duplicate, never a loss.

Failures: an endpoint that cannot be reached, a queue that does not exist, a refusal (credentials, permissions) raise
`SourceUnavailable` from `open`, `fetch`, `settle` and `discard`, with a reason naming the queue and what went wrong
(never a credential: `gateway/events/aws.py` scrubs it). After a missing-queue answer the URL is looked up again at
the next call, so a queue that comes back is found. Bounds: each request but ReceiveMessage has a connect timeout
(2 s) and a read timeout (5 s) and is tried at most twice; ReceiveMessage is tried once (the runner backs off and
calls again) with a read timeout of its wait plus 5 s.

Concurrency model: the coroutines are called on the event loop and never block it: every botocore call, and the
building of records (JSON-decoding bodies of up to 1 MB), runs in one of the source's own worker threads (`WORKERS`,
daemon threads, so that a long poll in flight never holds up the gateway's exit nor takes the loop's default
executor). A `fetch` cancelled while its ReceiveMessage is under way gives the messages it then gets back to the
queue at once (ChangeMessageVisibility 0) rather than after their visibility timeout. `close` returns at once: the
workers finish what was submitted (a pending delete still runs) and end. The botocore session and clients are the
process's, shared by every SQS source (`_shared_clients`: thread-safe, made on first use under a lock), so that a
source made again at each reopen, or one per poller of a mapping's MaximumConcurrency, costs two threads and no
more loading of botocore's models.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from gateway.events.aws import Clients, NoCredentials
from gateway.events.pollers.source import Record, SourceUnavailable
from gateway.settings import Settings
from gateway.store.mappings import Mapping

__all__ = ["QueueArn", "SqsSource", "parse_queue_arn", "record_of", "source_for"]

log = logging.getLogger("gateway.events.pollers.sqs")

T = TypeVar("T")

KIND = "sqs"
#: SQS's cap on messages per ReceiveMessage and on entries per DeleteMessageBatch / ChangeMessageVisibilityBatch
PER_CALL = 10
#: SQS's cap on WaitTimeSeconds
LONG_POLL = 20
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 5.0
#: attempts per request but ReceiveMessage (which is tried once), the first included
ATTEMPTS = 2
#: worker threads per source: the runner makes one call at a time; the second releases an abandoned long poll's
#: messages
WORKERS = 2
_ERROR_TEXT = 300
_ARN = re.compile(r"arn:(aws[a-zA-Z0-9-]*):sqs:([a-z0-9-]+):(\d{12}):([a-zA-Z0-9_-]{1,80}(?:\.fifo)?)")
_MISSING = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}


@dataclass(frozen=True, slots=True)
class QueueArn:
    """A parsed queue ARN."""

    arn: str
    region: str
    account: str
    name: str


def parse_queue_arn(arn: str) -> QueueArn | None:
    """The queue an ARN names, or None if it is not an SQS queue's ARN (a region and an account are required)."""
    match = _ARN.fullmatch(arn)
    if match is None:
        return None
    _, region, account, name = match.groups()
    return QueueArn(arn, region, account, name)


def source_for(mapping: Mapping, settings: Settings) -> SqsSource:
    """The source of a mapping on an SQS queue. Never raises: what is wrong with the ARN or the settings is a
    SourceUnavailable at `open`, so that the mapping says why."""
    return SqsSource(mapping.event_source_arn or "", settings.sqs_endpoint)


def record_of(message: dict[str, Any], queue_arn: QueueArn) -> Record:
    """Lambda's `aws:sqs` record for one message of a ReceiveMessage answer (botocore's shape)."""
    return encoded_record(message, queue_arn)[0]


def encoded_record(message: dict[str, Any], queue_arn: QueueArn) -> tuple[Record, bytes]:
    """`record_of`, and the record's JSON as the event holds it."""
    body = str(message.get("Body", ""))
    attributes = {str(k): str(v) for k, v in (message.get("Attributes") or {}).items()}
    event: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": attributes,
        "messageAttributes": {
            name: _message_attribute(value) for name, value in (message.get("MessageAttributes") or {}).items()
        },
        "md5OfBody": message.get("MD5OfBody") or _md5(body),
    }
    if message.get("MD5OfMessageAttributes"):
        event["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    event |= {"eventSource": "aws:sqs", "eventSourceARN": queue_arn.arn, "awsRegion": queue_arn.region}
    view = dict(event)
    try:
        view["body"] = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to decode: filters see the text
        pass
    try:
        sent = int(attributes["SentTimestamp"]) / 1000
    except (KeyError, ValueError):
        sent = time.time()
    encoded = _dumps(event)
    record = Record(
        item_id=event["messageId"],
        event=event,
        filter_view=view,
        timestamp=sent,
        size=len(encoded) + 1,  # and the comma between records
        group=attributes.get("MessageGroupId", ""),
    )
    return record, encoded


def _message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """botocore's MessageAttributeValue as Lambda's event shows it: camelCase, binary values in base64."""
    shown: dict[str, Any] = {}
    if "StringValue" in value:
        shown["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        shown["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    shown["stringListValues"] = list(value.get("StringListValues") or [])
    shown["binaryListValues"] = [base64.b64encode(v).decode() for v in value.get("BinaryListValues") or []]
    shown["dataType"] = value.get("DataType", "String")
    return shown


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(errors="surrogatepass"), usedforsecurity=False).hexdigest()


def _dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; a lone surrogate (which SQS does not allow, but a compatible server might hand over)
    is escaped rather than failing the batch for ever."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()


#: one botocore session for every SQS source of the process (a session costs some 9 MB and 0.3 s of CPU, mostly
#: loading the service's model: a source is made again at each reopen, and per poller of MaximumConcurrency), and
#: one pair of clients per endpoint, region and timeouts (botocore's clients are thread-safe; each keeps at most
#: CONNECTIONS connections, opened on demand)
_MAKER = Clients(log)
_CLIENTS: dict[tuple[str, str, tuple[float, float]], tuple[Any, Any]] = {}
_CLIENTS_LOCK = threading.Lock()
CONNECTIONS = 1000


def _shared_clients(endpoint: str, region: str, timeouts: tuple[float, float]) -> tuple[Any, Any]:
    """The (client, receiver) pair for these, made on first use (blocking: in a worker). Raises NoCredentials."""
    key = (endpoint, region, timeouts)
    with _CLIENTS_LOCK:
        made = _CLIENTS.get(key)
        if made is None:
            connect, read = timeouts
            make = partial(_MAKER.create, "sqs", endpoint, region, connect_timeout=connect, connections=CONNECTIONS)
            made = _CLIENTS[key] = (
                make(read_timeout=read, attempts=ATTEMPTS),
                make(read_timeout=LONG_POLL + read, attempts=1),
            )
        return made


class SqsSource:
    """One mapping's queue. See the module's docstring for what each call does and its concurrency."""

    kind = KIND

    def __init__(
        self,
        arn: str,
        endpoint: str | None,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.arn = arn
        self.queue = parse_queue_arn(arn)
        self.endpoint = endpoint
        self._timeouts = (connect_timeout, read_timeout)
        self._workers = _Workers(WORKERS, "sqs-source")
        self._lock = threading.Lock()
        self._url: str | None = None
        #: each fetched record's JSON by receipt handle, made in a worker so that `event` (on the loop) only joins
        #: bytes (6 MB of JSON would hold the loop up for tens of ms); dropped when the record is settled
        self._encoded: dict[str, bytes] = {}
        self._closed = False

    async def open(self) -> None:
        """Make the clients and find the queue's URL. Raises SourceUnavailable."""
        await self._run(self._queue_url)

    async def fetch(self, max_records: int, max_wait: float) -> list[Record]:
        """Up to min(max_records, 10) records, waiting up to max_wait seconds (at most 20) for the first."""
        if max_records <= 0:
            return []
        wait = int(min(LONG_POLL, max(0.0, max_wait)))
        fetched = await self._run(partial(self._receive, min(PER_CALL, max_records), wait), release=True)
        for record, encoded in fetched:
            self._encoded[record.event["receiptHandle"]] = encoded
        return [record for record, _ in fetched]

    def event(self, records: list[Record]) -> bytes:
        """`{"Records": [...]}`, Lambda's SQS event."""
        parts = (self._encoded.get(r.event["receiptHandle"]) or _dumps(r.event) for r in records)
        return b'{"Records":[' + b",".join(parts) + b"]}"

    async def settle(self, succeeded: list[Record], failed: list[Record]) -> None:
        """Delete the succeeded messages; the failed ones come back after their visibility timeout."""
        self._forget(succeeded + failed)
        if succeeded:
            await self._run(partial(self._delete, succeeded))

    async def discard(self, records: list[Record]) -> None:
        """Delete the messages (retries exhausted, OnFailure delivered)."""
        self._forget(records)
        if records:
            await self._run(partial(self._delete, records))

    async def close(self) -> None:
        """Stop: what was submitted still runs, then the workers end. Returns at once."""
        self._closed = True
        self._encoded.clear()
        self._workers.stop()

    def _forget(self, records: list[Record]) -> None:
        for record in records:
            self._encoded.pop(record.event["receiptHandle"], None)

    # -- on the loop ----------------------------------------------------------------------------------------

    async def _run(self, call: Callable[[], T], *, release: bool = False) -> T:
        """`call` in a worker, its failures a scrubbed SourceUnavailable. With `release`, the records a cancelled
        call still gets are made visible again at once."""
        if self._closed:
            raise SourceUnavailable(f"the source of {self.arn} is closed")
        future = self._workers.submit(partial(self._guarded, call))
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if release:
                future.add_done_callback(self._release_abandoned)
            raise

    def _release_abandoned(self, future: concurrent.futures.Future[Any]) -> None:
        """Done callback (in a worker, or on the loop if the call was already done: so never blocking here)."""
        if future.cancelled() or future.exception() is not None or not future.result():
            return
        records = [record for record, _ in future.result()]
        self._workers.submit(partial(self._guarded, partial(self._release, records)))

    # -- in the workers -------------------------------------------------------------------------------------

    def _guarded(self, call: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except SourceUnavailable as exc:
            raise SourceUnavailable(_MAKER.scrub(str(exc))) from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Error"))
            if code in _MISSING:
                with self._lock:  # deleted, or moved: ask again next time
                    self._url = None
            raise SourceUnavailable(self._reason(f"{code}: {error.get('Message', '')}")) from None
        except BotoCoreError as exc:
            raise SourceUnavailable(self._reason(f"{type(exc).__name__}: {exc}")) from None
        except Exception as exc:  # e.g. an endpoint botocore cannot use: the runner sees one exception type
            log.warning("SQS call for %s failed unexpectedly: %s", self.arn, type(exc).__name__)
            raise SourceUnavailable(self._reason(f"{type(exc).__name__}: {exc}")) from None

    def _reason(self, why: str) -> str:
        return _MAKER.scrub(f"SQS queue {self.arn} at {self.endpoint}: {why[:_ERROR_TEXT]}")

    def _clients(self) -> tuple[Any, Any]:
        """(the client of every call but ReceiveMessage, ReceiveMessage's: its read timeout covers the long poll)."""
        if self.queue is None:
            raise SourceUnavailable(f"{self.arn!r} is not an SQS queue's ARN")
        if not self.endpoint:
            raise SourceUnavailable(f"GATEWAY_SQS_ENDPOINT is not set: no SQS endpoint to read {self.arn} from")
        try:
            return _shared_clients(self.endpoint, self.queue.region, self._timeouts)
        except NoCredentials as exc:
            raise SourceUnavailable(str(exc)) from None

    def _queue_url(self) -> str:
        client, _ = self._clients()
        assert self.queue is not None
        with self._lock:
            url = self._url
        if url is None:
            answer = client.get_queue_url(QueueName=self.queue.name, QueueOwnerAWSAccountId=self.queue.account)
            url = str(answer["QueueUrl"])
            with self._lock:
                self._url = url
        return url

    def _receive(self, count: int, wait: int) -> list[tuple[Record, bytes]]:
        url = self._queue_url()
        _, receiver = self._clients()
        assert self.queue is not None
        answer = receiver.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return [encoded_record(message, self.queue) for message in answer.get("Messages") or []]

    def _delete(self, records: list[Record]) -> None:
        url = self._queue_url()
        client, _ = self._clients()
        for start in range(0, len(records), PER_CALL):
            chunk = records[start : start + PER_CALL]
            entries = [{"Id": str(i), "ReceiptHandle": r.event["receiptHandle"]} for i, r in enumerate(chunk)]
            answer = client.delete_message_batch(QueueUrl=url, Entries=entries)
            self._log_failed("delete", chunk, answer)

    def _release(self, records: list[Record]) -> None:
        url = self._queue_url()
        client, _ = self._clients()
        for start in range(0, len(records), PER_CALL):
            chunk = records[start : start + PER_CALL]
            entries = [
                {"Id": str(i), "ReceiptHandle": r.event["receiptHandle"], "VisibilityTimeout": 0}
                for i, r in enumerate(chunk)
            ]
            self._log_failed("release", chunk, client.change_message_visibility_batch(QueueUrl=url, Entries=entries))

    def _log_failed(self, what: str, chunk: list[Record], answer: dict[str, Any]) -> None:
        for failure in answer.get("Failed") or []:
            try:
                record = chunk[int(failure["Id"])]
            except (KeyError, ValueError, IndexError):
                continue
            log.warning(
                "SQS did not %s message %s of %s (%s: %s): it comes back after its visibility timeout",
                what,
                record.item_id,
                self.arn,
                failure.get("Code", "Error"),
                str(failure.get("Message", ""))[:_ERROR_TEXT],
            )


class _Workers:
    """`count` daemon threads that run the calls submitted, in order; started at the first submission."""

    def __init__(self, count: int, name: str) -> None:
        self._count = count
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self.started = False
        self._stopped = False

    def submit(self, call: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run `call` in a worker; its result or exception in the future (cancelled at once after `stop`)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self._stopped:
            future.cancel()
            return future
        if not self.started:
            self.started = True
            for i in range(self._count):
                threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True).start()
        self._jobs.put((call, future))
        return future

    def stop(self) -> None:
        """Let the workers end once they have run what was submitted."""
        if not self._stopped:
            self._stopped = True
            if self.started:
                for _ in range(self._count):
                    self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            call, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the awaiting coroutine, which re-raises it
                future.set_exception(exc)
