"""A fake Anthropic Messages API server on 127.0.0.1 (stdlib only), streaming included. It
answers from the request it gets, so a test checks a real HTTP round trip through the
``anthropic`` SDK and pydantic-ai's ``AnthropicModel``.

``POST /v1/messages``. With ``api_key`` set it checks the key like the real API, in
``x-api-key`` or ``Authorization: Bearer`` (the installed SDK, 2.x, sends the latter): a
missing or wrong key gets 401 with Anthropic's error body (``{"type": "error", "error":
{"type": "authentication_error", "message": "invalid x-api-key: <the key>"}}``, the key
echoed so a test sees it never reaches a reason or a log). ``keys`` records the key of every
request (``x-api-key``, else the bearer token, else None), ``requests`` every accepted body;
``fail_next`` holds HTTP statuses to answer the next accepted requests with
(``overloaded_error`` for 529, else ``api_error``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(
        str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text"
    )


class FakeAnthropic:
    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.keys: list[str | None] = []
        self.paths: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.fail_next: list[int] = []
        self.url = ""

    def reply(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The assistant's content blocks: a ``tool_use`` when tools are offered and the user
        asks for weather, the tool's result after it, else an echo of the last user text."""
        last = body["messages"][-1]
        content = last["content"]
        if isinstance(content, list):
            results = [b for b in content if b.get("type") == "tool_result"]
            if results:
                said = results[0].get("content")
                return [{"type": "text", "text": f"the tool said {_text(said or '')}"}]
        text = _text(content)
        if body.get("tools") and "weather" in text:
            return [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": body["tools"][0]["name"],
                    "input": {"city": "Oslo"},
                }
            ]
        return [{"type": "text", "text": f"echo: {text} ({len(body['messages'])} messages)"}]


def _handler(fake: FakeAnthropic) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, kind: str, message: str) -> None:
            self._json(status, {"type": "error", "error": {"type": kind, "message": message}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            bearer = self.headers.get("Authorization") or ""
            key = self.headers.get("x-api-key") or bearer.removeprefix("Bearer ") or None
            fake.keys.append(key)
            fake.paths.append(self.path)
            if self.path != "/v1/messages":
                self._error(404, "not_found_error", f"no route {self.path}")
                return
            if fake.api_key is not None and key != fake.api_key:
                self._error(401, "authentication_error", f"invalid x-api-key: {key}")
                return
            fake.requests.append(body)
            if fake.fail_next:
                status = fake.fail_next.pop(0)
                kind = "overloaded_error" if status == 529 else "api_error"
                self._error(status, kind, "try later")
                return
            blocks = fake.reply(body)
            stop = "tool_use" if blocks[0]["type"] == "tool_use" else "end_turn"
            usage = {"input_tokens": 11, "output_tokens": 7}
            message: dict[str, Any] = {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": blocks,
                "model": body["model"],
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": usage,
            }
            if not body.get("stream"):
                self._json(200, message)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()

            def event(kind: str, payload: dict[str, Any]) -> None:
                data = json.dumps({"type": kind, **payload})
                self.wfile.write(f"event: {kind}\ndata: {data}\n\n".encode())
                self.wfile.flush()

            start = message | {
                "content": [],
                "stop_reason": None,
                "usage": {"input_tokens": 11, "output_tokens": 0},
            }
            event("message_start", {"message": start})
            block = blocks[0]
            if block["type"] == "tool_use":
                event(
                    "content_block_start",
                    {"index": 0, "content_block": block | {"input": {}}},
                )
                event(
                    "content_block_delta",
                    {
                        "index": 0,
                        "delta": {
                            "type": "input_json_delta",
                            "partial_json": json.dumps(block["input"]),
                        },
                    },
                )
            else:
                event(
                    "content_block_start",
                    {"index": 0, "content_block": {"type": "text", "text": ""}},
                )
                for i, word in enumerate(block["text"].split(" ")):
                    piece = word if i == 0 else " " + word
                    event(
                        "content_block_delta",
                        {"index": 0, "delta": {"type": "text_delta", "text": piece}},
                    )
            event("content_block_stop", {"index": 0})
            event(
                "message_delta",
                {
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": 7},
                },
            )
            event("message_stop", {})

    return H


@contextmanager
def fake_anthropic_server(api_key: str | None = None) -> Iterator[FakeAnthropic]:
    """The SDK's base URL is the server root (it appends ``/v1/messages``)."""
    fake = FakeAnthropic(api_key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
