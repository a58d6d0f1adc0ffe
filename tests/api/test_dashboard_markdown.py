"""The dashboard's Markdown (raw HTML never passes) and the transcript of a stored
conversation (bubbles by role, tool calls as chips with their results)."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic_ai.messages import (
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)

from netsuke.api._markdown import render_markdown
from netsuke.api._pages import to_iso
from netsuke.api._transcript import transcript


def test_raw_html_is_escaped_and_unsafe_links_refused() -> None:
    html = str(
        render_markdown(
            '<script>alert(1)</script> <img src=x onerror="alert(2)"> **b** '
            "[bad](javascript:alert(3)) [ok](https://example.org) ![pic](https://e.org/p.png)"
        )
    )
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "&lt;img src=x" in html
    assert "<strong>b</strong>" in html
    assert 'href="javascript' not in html
    assert '<a href="https://example.org" rel="noopener noreferrer nofollow">ok</a>' in html
    assert "[image: pic]" in html  # never fetched


def test_code_blocks_and_tables() -> None:
    html = str(render_markdown("```python\nx = '<b>'\n```\n\n| a |\n|---|\n| 1 |"))
    assert "<pre><code class=\"language-python\">x = '&lt;b&gt;'\n</code></pre>" in html
    assert "<table>" in html and "<td>1</td>" in html


def test_a_conversation_as_bubbles_with_tool_chips() -> None:
    t0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    messages = [
        ModelRequest(
            parts=[
                SystemPromptPart("secret system prompt"),
                UserPromptPart("add 2 and 3", timestamp=t0),
            ]
        ),
        ModelResponse(parts=[ToolCallPart("add", {"a": 2, "b": 3}, "c1")], model_name="m1"),
        ModelRequest(parts=[ToolReturnPart("add", 5, "c1")]),
        ModelResponse(parts=[ToolCallPart("div", '{"a": 1, "b": 0}', "c2")], model_name="m1"),
        ModelRequest(parts=[ToolReturnPart("div", "division by zero", "c2", outcome="retried")]),
        ModelResponse(parts=[TextPart("It is **5**.")], model_name="m1"),
        ModelRequest(parts=[UserPromptPart("<b>thanks</b>")]),
        ModelResponse(parts=[TextPart("You're welcome.")], model_name="m1"),
    ]
    items = transcript(messages)
    assert [i.role for i in items] == ["user", "agent", "user", "agent"]
    assert items[0].time == t0 and items[0].text == "add 2 and 3"
    agent = items[1]
    assert agent.model == "m1" and str(agent.html) == "<p>It is <strong>5</strong>.</p>\n"
    add, div = agent.tools
    assert add.name == "add" and '"a": 2' in add.args and add.result == "5" and not add.error
    assert div.error and div.result is not None and "division by zero" in div.result
    assert str(items[2].html) == "&lt;b&gt;thanks&lt;/b&gt;"  # a user's text is never markup
    assert "secret system prompt" not in repr(items)


def test_times_are_iso_utc() -> None:
    assert to_iso(0) == "1970-01-01T00:00:00+00:00"
    assert to_iso(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05+00:00"  # naive = UTC
    assert to_iso(None) == ""
