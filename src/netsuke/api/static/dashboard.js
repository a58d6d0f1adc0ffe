// Netsuke dashboard: a few small functions, no build step. Live updates come from the
// events WebSocket (/api/v1/events); reads use the HttpOnly key cookie set at sign-in.
"use strict";
const Netsuke = (() => {
  function text(tag, value) {
    const el = document.createElement(tag);
    el.textContent = value;
    return el;
  }

  function connect(topics, onEvent) {
    const live = document.getElementById("live");
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    let delay = 500;
    function open() {
      const ws = new WebSocket(`${proto}//${location.host}/api/v1/events?topics=${encodeURIComponent(topics.join(","))}`);
      ws.onmessage = (msg) => {
        const frame = JSON.parse(msg.data);
        if (frame.type === "welcome") {
          delay = 500;
          if (live) { live.textContent = "live"; live.className = "live on"; }
        } else if (frame.type === "event") {
          onEvent(frame);
        }
      };
      ws.onclose = (ev) => {
        if (live) { live.textContent = "offline"; live.className = "live off"; }
        if (ev.code === 4401) { location.href = "/login"; return; }
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 10000);
      };
    }
    open();
  }

  function logoutButton() {
    const button = document.getElementById("logout");
    if (!button) return;
    button.addEventListener("click", async () => {
      await fetch("/dashboard/logout", { method: "POST" });
      location.href = "/login";
    });
  }

  function agentRow(agent) {
    const tr = document.createElement("tr");
    tr.dataset.agent = agent.name;
    const name = document.createElement("td");
    const link = text("a", agent.name);
    link.href = `/agents/${encodeURIComponent(agent.name)}`;
    name.appendChild(link);
    tr.appendChild(name);
    tr.appendChild(text("td", agent.model));
    const version = text("td", String(agent.version));
    version.className = "version";
    tr.appendChild(version);
    tr.appendChild(text("td", agent.capabilities.join(", ")));
    tr.appendChild(text("td", agent.created_at.replace("T", " ").slice(0, 19)));
    return tr;
  }

  function logEvent(frame) {
    const list = document.getElementById("events");
    if (!list) return;
    const d = frame.data;
    const what = d.name || d.agent || d.task || d.function || "";
    const li = text("li", `${new Date(frame.time * 1000).toLocaleTimeString()} ${frame.topic} ${what}${d.action ? " " + d.action : ""}`);
    list.prepend(li);
    while (list.children.length > 50) list.lastChild.remove();
  }

  async function upsertAgent(name) {
    const body = document.querySelector("#agents tbody");
    const old = body.querySelector(`tr[data-agent="${CSS.escape(name)}"]`);
    const response = await fetch(`/api/v1/agents/${encodeURIComponent(name)}`);
    if (response.status === 404) { if (old) old.remove(); return; }
    if (!response.ok) return;
    const row = agentRow(await response.json());
    if (old) { old.replaceWith(row); }
    else {
      const after = [...body.children].find((tr) => tr.dataset.agent > name);
      body.insertBefore(row, after || null);
    }
    document.getElementById("no-agents").hidden = body.children.length > 0;
  }

  function sessionRow(s) {
    const tr = document.createElement("tr");
    tr.dataset.session = s.session_id;
    tr.appendChild(text("td", s.session_id));
    tr.appendChild(text("td", s.agent || ""));
    tr.appendChild(text("td", s.user || ""));
    const state = text("td", s.state);
    state.className = "state";
    tr.appendChild(state);
    tr.appendChild(text("td", String(s.restarts)));
    tr.appendChild(text("td", s.last_activity ? new Date(s.last_activity * 1000).toLocaleTimeString() : ""));
    tr.appendChild(text("td", `${s.tokens_in} / ${s.tokens_out}`));
    return tr;
  }

  const sessionFetches = new Map();  // session id -> number of the latest fetch for it

  async function upsertSession(id, topic) {
    const body = document.querySelector("#sessions tbody");
    if (!body) return;
    const find = () => body.querySelector(`tr[data-session="${CSS.escape(id)}"]`);
    const mine = (sessionFetches.get(id) || 0) + 1;
    sessionFetches.set(id, mine);
    const response = await fetch(`/api/v1/sessions/${encodeURIComponent(id)}`);
    if (sessionFetches.get(id) !== mine) return;  // a later event's fetch has the newer state
    if (!response.ok) {
      const old = find();
      if (old && topic === "agent.stopped") old.querySelector(".state").textContent = "stopped";
      return;
    }
    const s = await response.json();
    if (sessionFetches.get(id) !== mine) return;
    if (topic === "agent.stopped") s.state = "stopped";
    const row = sessionRow(s);
    // looked up after the fetch: events that arrive together each fetch, and the later
    // answer replaces the row the earlier one added instead of adding a second one
    const old = find();
    if (old) old.replaceWith(row); else body.prepend(row);
  }

  function indexPage() {
    logoutButton();
    connect(["definition.*", "agent.*", "turn.*", "task.*"], (frame) => {
      logEvent(frame);
      if (frame.topic === "definition.changed" && frame.data.kind === "agent") {
        upsertAgent(frame.data.name);
      }
      if (frame.data.session && frame.data.user !== null) {
        upsertSession(frame.data.session, frame.topic);
      }
    });
  }

  function taskRow(t, dead) {
    const tr = document.createElement("tr");
    tr.dataset.task = t.id;
    tr.appendChild(text("td", t.id));
    tr.appendChild(text("td", t.kind));
    if (dead) {
      tr.appendChild(text("td", String(t.attempts)));
      tr.appendChild(text("td", t.last_error || ""));
      return tr;
    }
    const status = text("td", t.status);
    status.className = "status";
    tr.appendChild(status);
    tr.appendChild(text("td", `${t.attempts}/${t.max_attempts}`));
    tr.appendChild(text("td", String(t.priority)));
    tr.appendChild(text("td", t.capabilities.join(", ")));
    tr.appendChild(text("td", t.last_error || ""));
    return tr;
  }

  async function upsertTask(id) {
    const response = await fetch(`/api/v1/tasks/${encodeURIComponent(id)}`);
    if (!response.ok) return;
    const t = await response.json();
    const body = document.querySelector("#tasks tbody");
    const old = body.querySelector(`tr[data-task="${CSS.escape(id)}"]`);
    const row = taskRow(t, false);
    if (old) old.replaceWith(row); else body.prepend(row);
    const dead = document.querySelector("#dead tbody");
    if (!dead) return;
    const oldDead = dead.querySelector(`tr[data-task="${CSS.escape(id)}"]`);
    if (t.status === "dead") {
      const deadRow = taskRow(t, true);
      if (oldDead) oldDead.replaceWith(deadRow); else dead.prepend(deadRow);
    } else if (oldDead) {
      oldDead.remove();
    }
  }

  function tasksPage() {
    logoutButton();
    connect(["task.*"], (frame) => { if (frame.data.task) upsertTask(frame.data.task); });
  }

  function chatPage(agent, user) {
    logoutButton();
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/dashboard/chat/${encodeURIComponent(agent)}/ws?user=${encodeURIComponent(user)}`);
    const transcript = document.getElementById("transcript");
    const input = document.getElementById("chat-input");
    const send = document.getElementById("chat-send");
    const live = document.getElementById("live");
    let reply = null;
    ws.onopen = () => { if (live) { live.textContent = "live"; live.className = "live on"; } };
    ws.onclose = (ev) => {
      if (live) { live.textContent = "offline"; live.className = "live off"; }
      send.disabled = true;
      if (ev.code === 4401) location.href = "/login";
    };
    ws.onmessage = (msg) => {
      const f = JSON.parse(msg.data);
      if (f.type === "session") {
        document.getElementById("session-id").textContent = f.session_id;
        send.disabled = false;
      } else if (f.type === "delta") {
        if (!reply) { reply = text("li", ""); reply.className = "agent"; transcript.appendChild(reply); }
        reply.textContent += f.text;
      } else if (f.type === "tool_call_started") {
        transcript.appendChild(text("li", `tool ${f.tool_name}(${JSON.stringify(f.args)})`)).className = "tool";
      } else if (f.type === "completed") {
        if (!reply) { reply = text("li", String(f.output)); reply.className = "agent"; transcript.appendChild(reply); }
        reply.dataset.done = "1";
        reply = null;
        send.disabled = false;
      } else if (f.type === "error") {
        const where = f.execution_id ? ` (execution ${f.execution_id})` : "";
        const line = transcript.appendChild(text("li", `error: ${f.title}${f.detail ? ": " + f.detail : ""}${where}`));
        line.className = "error";
        if (f.execution_id) line.dataset.execution = f.execution_id;
        reply = null;
        send.disabled = false;
      }
    };
    document.getElementById("chat-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const message = input.value.trim();
      if (!message) return;
      transcript.appendChild(text("li", message)).className = "user";
      ws.send(JSON.stringify({ message }));
      input.value = "";
      send.disabled = true;
    });
  }

  async function refreshMetrics(name) {
    const response = await fetch(`/api/v1/agents/${encodeURIComponent(name)}/metrics`);
    if (!response.ok) return;
    const m = await response.json();
    const set = (id, value) => { const el = document.getElementById(id); if (el) el.textContent = value; };
    set("m-turns", String(m.turns));
    set("m-failed", String(m.turns_failed));
    set("m-tokens", `${m.tokens_in} / ${m.tokens_out}`);
    set("m-latency", `${m.latency_ms.p50 ?? "-"} / ${m.latency_ms.p99 ?? "-"}`);
    set("m-starts", `${m.starts} / ${m.restarts} / ${m.crashes}`);
    set("m-sessions", String(m.sessions));
  }

  function agentPage(name) {
    logoutButton();
    connect(["definition.changed", "agent.*", "turn.*"], (frame) => {
      if (frame.topic === "definition.changed") {
        if (frame.data.kind === "agent" && frame.data.name === name) location.reload();
        return;
      }
      if (frame.data.agent !== name) return;
      const logs = document.getElementById("logs");
      if (!logs) return;
      const d = frame.data;
      logs.prepend(text("li", `${frame.topic} ${d.session || "-"} ${d.status || d.reason || ""}`));
      while (logs.children.length > 50) logs.lastChild.remove();
      refreshMetrics(name);
    });
  }

  function loginPage() {
    const form = document.getElementById("login-form");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const key = document.getElementById("key").value.trim();
      const response = await fetch("/dashboard/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ key }),
      });
      if (response.ok) { location.href = "/"; return; }
      let detail = "sign-in failed";
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      document.getElementById("login-error").textContent = detail;
    });
  }

  return { agentPage, chatPage, indexPage, loginPage, tasksPage };
})();
