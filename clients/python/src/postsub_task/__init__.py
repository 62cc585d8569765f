"""Write postsub ``remote`` tasks in Python.

postsub POSTs a signed ``task.run`` request (Standard Webhooks) to the task's URL; the
task answers with a status, flags and an output, or with an error. This module verifies
the signature (:class:`Verifier`), parses the request (:meth:`TaskRun.parse`), builds the
answer (:class:`Answer`) and ties them together (:func:`handle`, :func:`serve`,
:func:`run`). Standard library only.

A whole task::

    import postsub_task as pt

    def task(run: pt.TaskRun) -> pt.Answer:
        if not run.submission.answers.get("email"):
            return pt.Answer.flagged([pt.Flag("email", "required", "please give an email")])
        return pt.Answer.ok({"checked": True})

    pt.run(task, secret="whsec_...", port=8700)
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import hmac
import http.server
import json
import logging
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = [
    "Answer",
    "Binding",
    "Flag",
    "SignatureError",
    "Submission",
    "TaskRun",
    "TaskServer",
    "Verifier",
    "handle",
    "respond",
    "run",
    "serve",
    "sign",
]

__version__ = "0.1.0"

log = logging.getLogger("postsub_task")

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300
"""Seconds a ``webhook-timestamp`` may be away from now, either way."""
MAX_BODY = 16 * 1024 * 1024
"""The largest request body :func:`serve` reads, in bytes."""

_INTEGER = re.compile(r"-?[0-9]+")


# --- Signatures -------------------------------------------------------------------------


class SignatureError(Exception):
    """A request whose Standard Webhooks signature does not verify; the message says why."""


def _signing_key(secret: str) -> bytes:
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError("secret must look like `whsec_<base64>` (Standard Webhooks)")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"secret after `whsec_` is not base64: {err}") from None
    if not key:
        raise ValueError("secret is empty")
    return key


def _signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def _as_bytes(body: Union[bytes, bytearray, memoryview, str]) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value (``v1,<base64>``) of a message.

    Raises ValueError if ``secret`` is not ``whsec_<base64>``.
    """
    return _signature(_signing_key(secret), msg_id, int(timestamp), _as_bytes(body))


def _header(headers: Mapping[str, Any], name: str) -> Optional[str]:
    """All values of header ``name`` (any case) joined with spaces, or None."""
    get_all = getattr(headers, "get_all", None)  # email.message.Message, http.client
    if callable(get_all):
        values = get_all(name) or []
    else:
        values = [v for k, v in headers.items() if isinstance(k, str) and k.lower() == name]
    values = [v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in values]
    return " ".join(values) if values else None


class Verifier:
    """Checks the Standard Webhooks signature of requests signed with ``secret``.

    Raises ValueError if ``secret`` is not ``whsec_<base64>``.
    """

    def __init__(self, secret: str, tolerance: int = DEFAULT_TOLERANCE) -> None:
        self._key = _signing_key(secret)
        if tolerance < 0:
            raise ValueError("tolerance must not be negative")
        self.tolerance = tolerance

    def __repr__(self) -> str:
        return f"Verifier(secret='whsec_***', tolerance={self.tolerance})"

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The ``webhook-signature`` value of a message, with this verifier's secret."""
        return _signature(self._key, msg_id, int(timestamp), _as_bytes(body))

    def verify(
        self, headers: Mapping[str, Any], body: bytes, now: Optional[float] = None
    ) -> None:
        """Return if ``headers`` sign ``body`` (the raw request bytes); else raise SignatureError.

        Header names are matched in any case; ``now`` (Unix seconds) defaults to the clock.
        """
        msg_id = _header(headers, "webhook-id")
        stamp = _header(headers, "webhook-timestamp")
        signatures = _header(headers, "webhook-signature")
        for name, value in (
            ("webhook-id", msg_id),
            ("webhook-timestamp", stamp),
            ("webhook-signature", signatures),
        ):
            if value is None or not value.strip():
                raise SignatureError(f"missing {name} header")
        assert msg_id is not None and stamp is not None and signatures is not None
        stamp = stamp.strip()
        if not _INTEGER.fullmatch(stamp):
            raise SignatureError(f"webhook-timestamp is not an integer: {stamp[:40]!r}")
        timestamp = int(stamp)
        now = time.time() if now is None else now
        if timestamp < now - self.tolerance:
            raise SignatureError("timestamp too old")
        if timestamp > now + self.tolerance:
            raise SignatureError("timestamp too far in the future")

        expected = self.sign(msg_id, timestamp, body).encode("ascii")
        found_v1 = False
        matched = False
        for entry in signatures.split():
            version, _, _ = entry.partition(",")
            if version != "v1":
                continue  # other schemes (v1a, v2, ...) are not ours to check
            found_v1 = True
            # Check them all (no early exit), each in constant time.
            if hmac.compare_digest(expected, entry.encode("utf-8", "replace")):
                matched = True
        if not found_v1:
            raise SignatureError("no v1 signature in webhook-signature header")
        if not matched:
            raise SignatureError("no signature matches")


# --- The request ------------------------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    """The binding being run: which task of which form."""

    id: str
    name: str
    form_id: str


@dataclass(frozen=True)
class Submission:
    """The submission the task runs on."""

    form_id: str
    submission_id: str
    answers: Dict[str, Any]
    """Answers keyed by question key; values are any JSON."""
    submitted_at: _dt.datetime
    """When the backend stored it (timezone-aware)."""
    metadata: Dict[str, Any] = field(default_factory=dict)
    """Context from the backend (request id, user agent, ...)."""
    event: str = "created"
    """What happened to it: ``created``, ``updated`` or ``deleted`` (a binding taking edits)."""
    revision: int = 0
    """The backend's version of it: of two edits, the higher is the newer; 0 when unknown."""


@dataclass(frozen=True)
class TaskRun:
    """A ``task.run`` request."""

    run_id: str
    """Stable across attempts (it is also the ``webhook-id``): use it to drop repeats."""
    attempt: int
    """1 for the first attempt; above 1, an earlier one may have had its effect."""
    binding: Binding
    settings: Dict[str, Any]
    """The binding config's ``settings`` object, ``{}`` if none."""
    submission: Submission

    @classmethod
    def parse(cls, body: Union[bytes, str]) -> "TaskRun":
        """Parse a request body; raises ValueError with a one-line reason if it is not one."""
        try:
            text = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body
            data = json.loads(text)
        except (UnicodeDecodeError, ValueError) as err:
            raise ValueError(f"body is not JSON: {err}") from None
        obj = _obj(data, "body")
        kind = obj.get("type")
        if kind != "task.run":
            raise ValueError(f"type is {json.dumps(kind)}, expected \"task.run\"")
        attempt = obj.get("attempt")
        if "attempt" not in obj:
            raise ValueError("missing field attempt")
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValueError("field attempt must be a positive integer")
        binding = _obj(_get(obj, "binding"), "binding")
        settings = obj.get("settings")
        settings = {} if settings is None else _obj(settings, "settings")
        sub = _obj(_get(obj, "submission"), "submission")
        metadata = sub.get("metadata")
        return cls(
            run_id=_str(obj, "run_id"),
            attempt=attempt,
            binding=Binding(
                id=_str(binding, "id", "binding."),
                name=_str(binding, "name", "binding."),
                form_id=_str(binding, "form_id", "binding."),
            ),
            settings=settings,
            submission=Submission(
                form_id=_str(sub, "form_id", "submission."),
                submission_id=_str(sub, "submission_id", "submission."),
                answers=_obj(_get(sub, "answers", "submission."), "submission.answers"),
                submitted_at=_rfc3339(
                    _str(sub, "submitted_at", "submission."), "submission.submitted_at"
                ),
                metadata={} if metadata is None else _obj(metadata, "submission.metadata"),
                event=_event(sub),
                revision=_revision(sub),
            ),
        )


def _event(sub: Dict[str, Any]) -> str:
    event = sub.get("event", "created")
    if event not in ("created", "updated", "deleted"):
        raise ValueError("field submission.event must be created, updated or deleted")
    return event


def _revision(sub: Dict[str, Any]) -> int:
    revision = sub.get("revision", 0)
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
        raise ValueError("field submission.revision must be a whole number")
    return revision


def _get(obj: Dict[str, Any], key: str, prefix: str = "") -> Any:
    if key not in obj or obj[key] is None:
        raise ValueError(f"missing field {prefix}{key}")
    return obj[key]


def _obj(value: Any, what: str) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object")
    return value


def _str(obj: Dict[str, Any], key: str, prefix: str = "") -> str:
    value = _get(obj, key, prefix)
    if not isinstance(value, str):
        raise ValueError(f"field {prefix}{key} must be a string")
    return value


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})"
)


def _rfc3339(text: str, what: str) -> _dt.datetime:
    """An RFC 3339 date-time (any fraction digits; ``Z`` or an offset), timezone-aware."""
    m = _RFC3339.fullmatch(text)
    if not m:
        raise ValueError(f"field {what} is not an RFC 3339 date-time: {text[:40]!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micros = int((m.group(7) or "0")[:6].ljust(6, "0"))
    if second == 60:  # a leap second: the last instant before it
        second, micros = 59, 999_999
    zone = m.group(8)
    if zone in ("Z", "z"):
        tz = _dt.timezone.utc
    else:
        sign_ = -1 if zone[0] == "-" else 1
        tz = _dt.timezone(sign_ * _dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        return _dt.datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)
    except ValueError as err:
        raise ValueError(f"field {what} is not a valid date-time: {err}") from None


# --- The answer -------------------------------------------------------------------------


@dataclass(frozen=True)
class Flag:
    """A problem found with an answer."""

    field: str
    """The question key."""
    rule: str
    """A stable name for the check, e.g. ``required``."""
    message: str
    """A sentence for the person who filled the form."""


FlagLike = Union[Flag, Mapping[str, str]]


def _flag(value: FlagLike) -> Flag:
    if isinstance(value, Flag):
        return value
    if isinstance(value, Mapping):
        try:
            return Flag(str(value["field"]), str(value["rule"]), str(value["message"]))
        except KeyError as err:
            raise ValueError(f"flag is missing {err}") from None
    raise TypeError(f"a flag must be a Flag or a mapping, not {type(value).__name__}")


class Answer:
    """What a task answers; build one with :meth:`ok`, :meth:`flagged` or :meth:`error`."""

    __slots__ = ("status_code", "_payload", "retry_after")

    def __init__(
        self, status_code: int, payload: Dict[str, Any], retry_after: Optional[int] = None
    ) -> None:
        self.status_code = status_code
        """The HTTP status: 200, or 422 (fatal) / 503 (retryable) for task errors."""
        self._payload = payload
        self.retry_after = retry_after
        """Seconds before a retry is welcome (sent as ``Retry-After``), or None."""

    @classmethod
    def ok(cls, output: Any = None) -> "Answer":
        """Success without flags; ``output`` (any JSON, ``{}`` if None) goes in the run history."""
        return cls.flagged([], output)

    @classmethod
    def flagged(cls, flags: Sequence[FlagLike], output: Any = None) -> "Answer":
        """Success with problems found; status ``flagged``, or ``ok`` if ``flags`` is empty."""
        parsed = [_flag(f) for f in flags]
        return cls(
            200,
            {
                "status": "flagged" if parsed else "ok",
                "flags": [
                    {"field": f.field, "rule": f.rule, "message": f.message} for f in parsed
                ],
                "output": {} if output is None else output,
            },
        )

    @classmethod
    def error(
        cls, message: str, retryable: bool = False, retry_after: Optional[int] = None
    ) -> "Answer":
        """The task could not run: 503 if ``retryable`` (postsub tries again later), else 422.

        ``retry_after`` (seconds, retryable errors only) is sent as ``Retry-After``.
        """
        if retry_after is not None and not retryable:
            raise ValueError("retry_after only makes sense for a retryable error")
        return cls._error(503 if retryable else 422, message, retryable, retry_after)

    @classmethod
    def _error(
        cls, status: int, message: str, retryable: bool, retry_after: Optional[int] = None
    ) -> "Answer":
        return cls(status, {"error": str(message), "retryable": bool(retryable)}, retry_after)

    @property
    def status(self) -> Optional[str]:
        """``ok`` or ``flagged``; None for an error."""
        return self._payload.get("status")

    @property
    def flags(self) -> List[Flag]:
        """The flags (empty for ``ok`` and errors)."""
        return [Flag(**f) for f in self._payload.get("flags", [])]

    @property
    def output(self) -> Any:
        """The output (None for an error)."""
        return self._payload.get("output")

    @property
    def message(self) -> Optional[str]:
        """The error message; None unless an error."""
        return self._payload.get("error")

    @property
    def retryable(self) -> bool:
        """Whether postsub may try again (errors only)."""
        return bool(self._payload.get("retryable", False))

    def to_json(self) -> Dict[str, Any]:
        """The body as a JSON-ready dict."""
        return json.loads(self.body())

    def body(self) -> bytes:
        """The JSON body (UTF-8). Raises TypeError/ValueError if the output is not JSON."""
        return json.dumps(self._payload, ensure_ascii=False, allow_nan=False).encode("utf-8")

    def headers(self) -> Dict[str, str]:
        """The response headers: ``content-type`` and, if set, ``retry-after``."""
        headers = {"content-type": "application/json"}
        if self.retry_after is not None:
            headers["retry-after"] = str(int(self.retry_after))
        return headers

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Answer):
            return NotImplemented
        return (self.status_code, self._payload, self.retry_after) == (
            other.status_code,
            other._payload,
            other.retry_after,
        )

    def __repr__(self) -> str:
        return f"Answer({self.status_code}, {self._payload!r})"


# --- Handling a request -----------------------------------------------------------------

Task = Callable[[TaskRun], Answer]
"""A task: runs on one request and returns its :class:`Answer`."""


def respond(verifier: Verifier, headers: Mapping[str, Any], body: bytes, task: Task) -> Answer:
    """Like :func:`handle`, but return the :class:`Answer` (whose body is known to encode)."""
    try:
        verifier.verify(headers, body)
    except SignatureError as err:
        log.warning("refused a request: %s", err)
        return Answer._error(401, f"bad signature: {err}", False)
    try:
        request = TaskRun.parse(body)
    except ValueError as err:
        log.warning("refused a request: %s", err)
        return Answer._error(400, f"bad request: {err}", False)
    try:
        answer = task(request)
        if not isinstance(answer, Answer):
            raise TypeError(f"the task returned {type(answer).__name__}, not an Answer")
        answer.body()  # fails here, not later, if the output is not JSON
    except Exception as err:  # noqa: BLE001 - the task's failure is reported, not raised
        log.exception("task failed on run %s (attempt %s)", request.run_id, request.attempt)
        return Answer._error(500, str(err) or type(err).__name__, True)
    return answer


def handle(
    verifier: Verifier, headers: Mapping[str, Any], body: bytes, task: Task
) -> Tuple[int, bytes]:
    """Answer one request: ``(status, JSON body)``.

    A bad signature gives 401 and a bad request 400 (both fatal for postsub); an exception
    in ``task`` gives 500, retryable, with the exception's message; otherwise the task's
    answer.
    """
    answer = respond(verifier, headers, body, task)
    return answer.status_code, answer.body()


# --- Serving ----------------------------------------------------------------------------


class TaskServer(http.server.ThreadingHTTPServer):
    """An HTTP server answering POSTs (any path) with a task; see :func:`serve`."""

    daemon_threads = True

    def __init__(self, address: Tuple[str, int], verifier: Verifier, task: Task) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.verifier = verifier
        self.task = task
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        """The server's URL, e.g. ``http://127.0.0.1:8700/`` (the real port if it was 0)."""
        host, port = self.server_address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: TaskServer
    server_version = f"postsub-task/{__version__}"

    def do_POST(self) -> None:  # noqa: N802 - the http.server convention
        length = self.headers.get("content-length")
        if length is None or not length.strip().isdigit():
            return self._send(Answer._error(411, "a content-length is required", False))
        if int(length) > MAX_BODY:
            return self._send(Answer._error(413, f"body over {MAX_BODY} bytes", False))
        body = self.rfile.read(int(length))
        self._send(respond(self.server.verifier, self.headers, body, self.server.task))

    def _refuse(self) -> None:
        self.close_connection = True
        answer = Answer._error(405, "only POST is answered", False)
        self.send_response(answer.status_code)
        self.send_header("allow", "POST")
        self._finish(answer)

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = _refuse  # noqa: N815

    def _send(self, answer: Answer) -> None:
        self.send_response(answer.status_code)
        self._finish(answer)

    def _finish(self, answer: Answer) -> None:
        body = answer.body()
        for name, value in answer.headers().items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.info("%s %s", self.address_string(), format % args)


def serve(
    task: Task,
    secret: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
) -> TaskServer:
    """A bound server answering POSTs with ``task``; call its ``serve_forever()``.

    Port 0 picks a free port (see ``server.url``). Stop it with ``shutdown()`` from another
    thread, then ``server_close()``. Raises ValueError on a bad secret.
    """
    return TaskServer((host, port), Verifier(secret, tolerance), task)


def run(
    task: Task,
    secret: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ready: Optional[Callable[[TaskServer], None]] = None,
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Serve ``task`` until interrupted (Ctrl-C); ``ready(server)`` is called once bound."""
    server = serve(task, secret, host, port, tolerance=tolerance)
    try:
        if ready is not None:
            ready(server)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
