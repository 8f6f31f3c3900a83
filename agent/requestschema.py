"""Remote requests on the wire: the request schemas, the parser and the response builder.

Pure: no I/O, no clock (callers pass the time in). A request arrives on
``{prefix}/{hub}/request/{name}`` with a JSON object body (an empty body means ``{}``);
the answer goes to ``{prefix}/{hub}/response/{name}``. Every body may carry a
``transaction`` (string or integer) which the response echoes, for MQTT 3.1.1 consumers
that have no correlation data (the zigbee2mqtt bridge convention, peers.md section 3.1).

Requests are size-capped before a byte is parsed and validated strictly (unknown keys are
refused), so a malformed or hostile request costs the hub almost nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import AgentError
from agent.topics import encode_json, utc_iso

if TYPE_CHECKING:
    from datetime import datetime

MAX_REQUEST_BYTES: Final = 4 * 1024
# A reload may carry a whole config file (capped at 256 KiB by configload) JSON-escaped.
MAX_RELOAD_REQUEST_BYTES: Final = 320 * 1024
MAX_TRANSACTION_CHARS: Final = 128
MAX_LOG_LEVEL_DURATION_S: Final = 3600.0  # an hour of DEBUG is plenty for a phone call
MAX_REQUEUE_SEQS: Final = 10_000

ErrorCode = Literal["unknown_request", "too_large", "malformed", "invalid", "failed", "rejected"]
Transaction = str | int


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    transaction: Transaction | None = Field(default=None)


class PingRequest(_Body):
    """``ping``: is the hub's request path alive?"""


class InfoRequest(_Body):
    """``info``: versions, config hash, bound devices."""


class HealthRequest(_Body):
    """``health``: a health report made now, not the last retained one."""


class ConfigRequest(_Body):
    """``config``: the running config with secrets and patient identifiers redacted."""


class ReloadConfigRequest(_Body):
    """``reload-config``: validate then apply a config; on error keep the running one.

    ``config`` is the new YAML text; without it the hub re-reads its config file.
    """

    config: str | None = None


class ReconnectDeviceRequest(_Body):
    """``reconnect-device``: drop and re-open one device's session."""

    device: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")


class RescanRequest(_Body):
    """``rescan``: start a fresh BLE discovery for the bound devices."""


class RequeueRejectedRequest(_Body):
    """``requeue-rejected``: put rejected readings back to pending (all, or these seqs)."""

    seqs: list[int] | None = Field(default=None, max_length=MAX_REQUEUE_SEQS)


class LogLevelRequest(_Body):
    """``log-level``: a different log level for a bounded time, then back to the config's."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]
    duration_s: float = Field(default=600.0, gt=0, le=MAX_LOG_LEVEL_DURATION_S)


class FlushRequest(_Body):
    """``flush``: publish pending readings now, and wait briefly for the broker."""


REQUEST_MODELS: Final[dict[str, type[_Body]]] = {
    "ping": PingRequest,
    "info": InfoRequest,
    "health": HealthRequest,
    "config": ConfigRequest,
    "reload-config": ReloadConfigRequest,
    "reconnect-device": ReconnectDeviceRequest,
    "rescan": RescanRequest,
    "requeue-rejected": RequeueRejectedRequest,
    "log-level": LogLevelRequest,
    "flush": FlushRequest,
}


class BadRequestError(AgentError):
    """A request that cannot be run. ``code`` says why; the message says what to fix."""

    def __init__(self, code: ErrorCode, message: str, transaction: Transaction | None) -> None:
        """Keep the transaction so even an error response can be matched by the caller."""
        super().__init__(message)
        self.code: ErrorCode = code
        self.transaction = transaction


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A request that passed the size cap and its schema."""

    name: str
    body: _Body

    @property
    def transaction(self) -> Transaction | None:
        """The caller's transaction id, echoed in the response."""
        return self.body.transaction


def _loose_transaction(document: object) -> Transaction | None:
    """The transaction of a body that failed validation, if it is usable, for the echo."""
    if not isinstance(document, dict):
        return None
    value = document.get("transaction")
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and len(value) <= MAX_TRANSACTION_CHARS):
        return value
    return None


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(body)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def parse_request(name: str, payload: bytes) -> ParsedRequest:
    """Check size, JSON and schema of a request called ``name``.

    Raises:
        BadRequestError: unknown name, too large, not a JSON object, or invalid fields.
    """
    model = REQUEST_MODELS.get(name)
    if model is None:
        known = ", ".join(sorted(REQUEST_MODELS))
        raise BadRequestError("unknown_request", f"unknown request {name!r}; known: {known}", None)
    cap = MAX_RELOAD_REQUEST_BYTES if model is ReloadConfigRequest else MAX_REQUEST_BYTES
    if len(payload) > cap:
        msg = f"request body is {len(payload)} bytes; the limit for {name} is {cap}"
        raise BadRequestError("too_large", msg, None)
    document = _decode(payload)
    transaction = _loose_transaction(document)
    if not isinstance(document, dict):
        raise BadRequestError("malformed", "the request body must be a JSON object", None)
    if isinstance(document.get("transaction"), str) and transaction is None:
        msg = f"transaction: at most {MAX_TRANSACTION_CHARS} characters"
        raise BadRequestError("invalid", msg, None)
    try:
        body = model.model_validate(document)
    except ValidationError as exc:
        raise BadRequestError("invalid", _validation_message(exc), transaction) from exc
    return ParsedRequest(name, body)


def _decode(payload: bytes) -> object:
    if not payload.strip():
        return {}
    try:
        return json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"the request body is not UTF-8 JSON ({exc.__class__.__name__})"
        raise BadRequestError("malformed", msg, None) from exc
    except RecursionError as exc:  # "[[[[...]]]]" nested past the parser's recursion limit
        raise BadRequestError("malformed", "the request body is nested too deeply", None) from exc


def build_response(
    name: str,
    *,
    now: datetime,
    data: dict[str, Any] | None = None,
    error: BadRequestError | None = None,
    transaction: Transaction | None = None,
) -> bytes:
    """The response document: ``status`` ok/error, ``data``, ``error``, echoed ``transaction``."""
    document: dict[str, Any] = {
        "request": name,
        "status": "ok" if error is None else "error",
        "data": data if data is not None else {},
        "ts": utc_iso(now),
    }
    if error is not None:
        document["error"] = str(error)
        document["error_code"] = error.code
    if transaction is not None:
        document["transaction"] = transaction
    return encode_json(document)
