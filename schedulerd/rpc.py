"""JSON-RPC 2.0 as the control socket speaks it: framing and codec, nothing else.

One JSON object per line (PROTOCOL.md sections 1 and 2). Pure: no I/O and no knowledge
of jobs, clusters or the store. The server (``control.py``) feeds the lines it reads to
:func:`decode_request` and writes the lines built here; each method (``methods/``)
decodes its own :class:`Params` into a typed struct.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import msgspec

from schedulerd.errors import InvalidParams, InvalidRequest, ParseRequestError, SchedulerdError

PROTOCOL_VERSION = 1
T = TypeVar("T")

#: every integer on the wire fits SQLite's INTEGER: a bigger one is a params error (-32602),
#: not an OverflowError deep in the store
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]

_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()


class Params:
    """A request's params, still encoded: each method decodes them straight into its
    own typed struct (no intermediate dicts for a 100,000-job submit)."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes | None) -> None:
        self.raw = raw

    def decode(self, kind: type[T]) -> T:
        try:
            return msgspec.json.decode(self.raw or b"{}", type=kind)
        except msgspec.ValidationError as exc:
            raise InvalidParams(f"invalid params: {exc}") from exc
        except (msgspec.DecodeError, RecursionError) as exc:
            # the envelope only skipped over params: bad UTF-8 or absurd nesting in them
            # is a parse error of the request, not a bug of ours
            raise ParseRequestError(f"malformed JSON in params: {_why(exc)}") from exc

    def _value(self) -> Any:
        return self.decode(Any) if self.raw is not None else None

    def is_empty(self) -> bool:
        return self._value() in ({}, None)

    def keys(self) -> list[str]:
        value = self._value()
        return sorted(value) if isinstance(value, dict) else []

    def expect_none(self) -> None:
        """For a method that takes no params: refuse any."""
        if not self.is_empty():
            got = self.keys() or "a non-object"
            raise InvalidParams(f"this method takes no params, got {got}")


def _why(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return f"nested deeper than the decoder allows ({exc})"
    return str(exc)


class _Envelope(msgspec.Struct):
    jsonrpc: Any = None
    method: Any = None
    id: Any = msgspec.UNSET
    params: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


_envelope_decoder = msgspec.json.Decoder(_Envelope)


@dataclass(frozen=True, slots=True)
class Request:
    id: int | str | None
    method: str
    params: Params
    is_notification: bool


def decode_request(line: bytes) -> Request:
    """Parse one line into a request; ParseRequestError / InvalidRequest otherwise."""
    try:
        env = _envelope_decoder.decode(line)
    except msgspec.ValidationError as exc:
        # valid JSON, but not an object: say what it is
        try:
            obj = _json_decoder.decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as inner:
            raise ParseRequestError(f"malformed JSON: {_why(inner)}") from inner
        if isinstance(obj, list):
            raise InvalidRequest(
                "batch requests are not supported; send one object per line"
            ) from exc
        raise InvalidRequest("a request is a JSON object") from exc
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ParseRequestError(f"malformed JSON: {_why(exc)}") from exc
    except UnicodeDecodeError as exc:
        where = f"{exc.reason} at byte {exc.start}"
        raise ParseRequestError(f"malformed JSON: not UTF-8 ({where})") from exc
    raw_id = None if env.id is msgspec.UNSET else env.id
    safe_id = raw_id if isinstance(raw_id, int | str) and not isinstance(raw_id, bool) else None
    if env.jsonrpc != "2.0":
        raise InvalidRequest('"jsonrpc" must be "2.0"', data={"id": safe_id})
    if not isinstance(env.method, str) or not env.method:
        raise InvalidRequest('"method" must be a non-empty string', data={"id": safe_id})
    if raw_id is not None and safe_id is None:
        raise InvalidRequest('"id" must be a string, an integer or null')
    raw = bytes(env.params) or None
    if raw is not None and raw.lstrip()[:1] not in (b"{", b"n"):
        raise InvalidParams("params must be an object (named parameters)", data={"id": safe_id})
    if raw is not None and raw.strip() == b"null":
        raw = None
    return Request(
        id=safe_id,
        method=env.method,
        params=Params(raw),
        is_notification=env.id is msgspec.UNSET,
    )


def encode(obj: Any) -> bytes:
    return _json_encoder.encode(obj) + b"\n"


def result_line(req_id: int | str | None, result: Any) -> bytes:
    return encode({"jsonrpc": "2.0", "id": req_id, "result": result})


def error_line(req_id: int | str | None, error: SchedulerdError) -> bytes:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.data is not None:
        body["data"] = error.data
    return encode({"jsonrpc": "2.0", "id": req_id, "error": body})


def notification_line(method: str, params: Any) -> bytes:
    return encode({"jsonrpc": "2.0", "method": method, "params": params})
