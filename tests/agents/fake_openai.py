"""A fake OpenAI-compatible chat-completions server on 127.0.0.1 (stdlib only), streaming
included. It answers from the request it gets, so a test checks a real HTTP round trip.

With ``api_key`` set it checks ``Authorization: Bearer <key>`` like a real provider: a
missing or wrong key gets 401 with OpenAI's error body. ``auth`` records every
Authorization header it received; ``hosts`` every Host header."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAI:
    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.auth: list[str | None] = []
        self.hosts: list[str | None] = []
        self.requests: list[dict[str, Any]] = []
        self.fail_next: list[int] = []  # HTTP statuses to answer with first
        self.url = ""

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        """The assistant message for a request: a tool call when tools are offered and the
        user asks for weather, the tool's result after it, else an echo."""
        msgs = body["messages"]
        last = msgs[-1]
        if last["role"] == "tool":
            return {"role": "assistant", "content": f"the tool said {last['content']}"}
        text = last.get("content") or ""
        if isinstance(text, list):
            text = " ".join(p.get("text", "") for p in text)
        if body.get("tools") and "weather" in text:
            return {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": body["tools"][0]["function"]["name"],
                            "arguments": '{"city": "Oslo"}',
                        },
                    }
                ],
            }
        return {"role": "assistant", "content": f"echo: {text} ({len(msgs)} messages)"}


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            auth = self.headers.get("Authorization")
            fake.auth.append(auth)
            fake.hosts.append(self.headers.get("Host"))
            if fake.api_key is not None and auth != f"Bearer {fake.api_key}":
                data = json.dumps(
                    {
                        "error": {
                            "message": f"Incorrect API key provided: {auth}",
                            "type": "invalid_request_error",
                            "code": "invalid_api_key",
                        }
                    }
                ).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            fake.requests.append(body)
            if fake.fail_next:
                status = fake.fail_next.pop(0)
                data = json.dumps(
                    {"error": {"message": "try later", "type": "server_error"}}
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            msg = fake.reply(body)
            usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
            if not body.get("stream"):
                data = json.dumps(
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "created": 1700000000,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": msg,
                                "finish_reason": "tool_calls" if msg.get("tool_calls") else "stop",
                            }
                        ],
                        "usage": usage,
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()

            def chunk(
                delta: dict[str, Any], finish: str | None = None, with_usage: bool = False
            ) -> None:
                payload: dict[str, Any] = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "created": 1700000000,
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                if with_usage:
                    payload["usage"] = usage
                self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                self.wfile.flush()

            chunk({"role": "assistant", "content": ""})
            if msg.get("tool_calls"):
                tc = msg["tool_calls"][0]
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": tc["id"],
                                "type": "function",
                                "function": {"name": tc["function"]["name"], "arguments": ""},
                            }
                        ]
                    }
                )
                chunk(
                    {
                        "tool_calls": [
                            {"index": 0, "function": {"arguments": tc["function"]["arguments"]}}
                        ]
                    }
                )
                chunk({}, "tool_calls", with_usage=True)
            else:
                for word in msg["content"].split(" "):
                    chunk({"content": word + " "})
                chunk({}, "stop", with_usage=True)
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return H


@contextmanager
def fake_openai_server(api_key: str | None = None) -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(api_key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
