"""The JSON-RPC codec (``schedulerd/rpc.py``) on its own: no socket, no daemon."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import msgspec
import pytest

from schedulerd import rpc
from schedulerd.errors import InvalidParams, InvalidRequest, JobNotFound, ParseRequestError

ROOT = Path(__file__).resolve().parents[1]


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_codec_imports_nothing_of_the_daemon() -> None:
    assert _imported(ROOT / "schedulerd/rpc.py") <= {
        "__future__", "dataclasses", "typing", "msgspec", "schedulerd.errors",
    }  # fmt: skip


def test_the_socket_server_and_the_methods_stay_apart() -> None:
    """control.py is transport: it reaches the jobs only through methods.HANDLERS; the
    methods never import the server."""
    server = _imported(ROOT / "schedulerd/control.py")
    assert not {
        n
        for n in server
        if n.startswith(
            ("schedulerd.state", "schedulerd.drivers", "schedulerd.config", "schedulerd.jobspec")
        )
    }
    for path in (ROOT / "schedulerd/methods").glob("*.py"):
        assert "schedulerd.control" not in _imported(path), path.name


def test_a_request_is_decoded_with_its_params_left_encoded() -> None:
    req = rpc.decode_request(b'{"jsonrpc":"2.0","id":7,"method":"job.get","params":{"id":3}}')
    assert (req.id, req.method, req.is_notification) == (7, "job.get", False)
    assert req.params.raw == b'{"id":3}'

    class Get(msgspec.Struct, forbid_unknown_fields=True):
        id: int

    assert req.params.decode(Get) == Get(id=3)


@pytest.mark.parametrize(
    ("line", "req_id", "notification"),
    [
        (b'{"jsonrpc":"2.0","method":"daemon.ping"}', None, True),
        (b'{"jsonrpc":"2.0","id":null,"method":"daemon.ping"}', None, False),
        (b'{"jsonrpc":"2.0","id":"a","method":"daemon.ping","params":null}', "a", False),
    ],
)
def test_ids_and_notifications(line: bytes, req_id: object, notification: bool) -> None:
    req = rpc.decode_request(line)
    assert (req.id, req.is_notification) == (req_id, notification)
    assert req.params.is_empty()
    req.params.expect_none()


@pytest.mark.parametrize(
    ("line", "error", "message", "data"),
    [
        (b"{nope", ParseRequestError, "malformed JSON", None),
        (b'{"jsonrpc":"2.0","id":1,"method":"x"}\xff', ParseRequestError, "malformed JSON", None),
        (b"[1]", InvalidRequest, "batch requests are not supported", None),
        (b'"hello"', InvalidRequest, "a request is a JSON object", None),
        (b'{"jsonrpc":"1.0","id":4,"method":"x"}', InvalidRequest, '"jsonrpc" must be', {"id": 4}),
        (b'{"jsonrpc":"2.0","id":4,"method":""}', InvalidRequest, '"method" must be', {"id": 4}),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"x"}', InvalidRequest, '"id" must be', None),
        (b'{"jsonrpc":"2.0","id":true,"method":"x"}', InvalidRequest, '"id" must be', None),
        (b'{"jsonrpc":"2.0","id":4,"method":"x","params":[1]}', InvalidParams,
         "params must be an object", {"id": 4}),
    ],
)  # fmt: skip
def test_bad_lines_are_refused_with_their_class(
    line: bytes, error: type[Exception], message: str, data: object
) -> None:
    with pytest.raises(error, match=message) as caught:
        rpc.decode_request(line)
    assert getattr(caught.value, "data", None) == data


def test_params_of_the_wrong_shape_are_a_params_error() -> None:
    class Limit(msgspec.Struct, forbid_unknown_fields=True):
        limit: rpc.Int64 = 1

    for raw, problem in ((b'{"limit":"x"}', "Expected `int`"), (b'{"limt":1}', "unknown field"),
                         (b'{"limit":9223372036854775808}', "<= 9223372036854775807")):  # fmt: skip
        with pytest.raises(InvalidParams, match=problem):
            rpc.Params(raw).decode(Limit)
    with pytest.raises(InvalidParams, match=r"takes no params, got \['a'\]"):
        rpc.Params(b'{"a":1}').expect_none()


def test_reply_lines() -> None:
    assert json.loads(rpc.result_line(3, {"pong": True})) == {
        "jsonrpc": "2.0", "id": 3, "result": {"pong": True},
    }  # fmt: skip
    err = JobNotFound("no job with id 9", data={"missing": [9]})
    line = rpc.error_line("x", err)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"jsonrpc": "2.0", "id": "x", "error": {
        "code": -32001, "message": "no job with id 9", "data": {"missing": [9]}}}  # fmt: skip
    assert "data" not in json.loads(rpc.error_line(None, JobNotFound()))["error"]
    assert json.loads(rpc.notification_line("events.event", {"cursor": 1})) == {
        "jsonrpc": "2.0", "method": "events.event", "params": {"cursor": 1},
    }  # fmt: skip
