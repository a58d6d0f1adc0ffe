// Netsuke dashboard: a few small functions, no build step. Live updates come from the
// events WebSocket (/api/v1/events); reads use the HttpOnly key cookie set at sign-in, and
// mutations send it with the X-Netsuke-Dashboard header (Netsuke.api). Never assign text
// from the server to innerHTML: only the chat's "html" (rendered server-side, raw HTML off).
"use strict";
const Netsuke = (() => {
  function text(tag, value, className) {
    const el = document.createElement(tag);
    el.textContent = value;
    if (className) el.className = className;
    return el;
  }

  // --- times: every <time datetime> in local time (never raw epoch seconds) ---------------
  const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  const todayFormat = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });

  function showTime(el) {
    const when = new Date(el.getAttribute("datetime"));
    if (Number.isNaN(when.getTime())) return;
    const today = new Date().toDateString() === when.toDateString();
    el.textContent = (today ? todayFormat : timeFormat).format(when);
    el.title = when.toISOString();
  }

  function localizeTimes(root) {
    (root || document).querySelectorAll("time[datetime]").forEach(showTime);
  }

  function timeElement(value) {  // value: epoch seconds, an ISO string or a Date
    if (value === null || value === undefined || value === "") return text("span", "—", "muted");
    const when = typeof value === "number" ? new Date(value * 1000) : new Date(value);
    const el = document.createElement("time");
    el.setAttribute("datetime", when.toISOString());
    showTime(el);
    return el;
  }

  // --- theme: light / dark, saved in localStorage (static/theme.js applies it early) -------
  function themeToggle() {
    const button = document.getElementById("theme-toggle");
    if (!button) return;
    const current = () => document.documentElement.dataset.theme
      || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
    const label = () => {
      const next = current() === "dark" ? "light" : "dark";
      button.setAttribute("aria-label", `Switch to the ${next} theme`);
      button.textContent = current() === "dark" ? "☀ Light" : "☾ Dark";
    };
    label();
    button.addEventListener("click", () => {
      const next = current() === "dark" ? "light" : "dark";
      document.documentElement.dataset.theme = next;
      try { localStorage.setItem("netsuke-theme", next); } catch (e) { /* not kept */ }
      label();
    });
  }

  // --- API calls from the page ---------------------------------------------------------------
  async function api(method, url, body) {
    const init = { method, headers: { "X-Netsuke-Dashboard": "1" }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    let data = null;
    try { data = await response.json(); } catch (e) { /* 204 or not JSON */ }
    return { ok: response.ok, status: response.status, data };
  }

  function problemText(result) {
    const d = result.data || {};
    return `${d.title || "Error " + result.status}${d.detail ? ": " + d.detail : ""}`;
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
    const model = document.createElement("td");
    model.appendChild(text("code", agent.model));
    tr.appendChild(model);
    tr.appendChild(text("td", String(agent.version), "version num"));
    tr.appendChild(text("td", agent.capabilities.join(", ")));
    const changed = document.createElement("td");
    changed.appendChild(timeElement(agent.created_at));
    tr.appendChild(changed);
    const chat = document.createElement("td");
    const chatLink = text("a", "Chat");
    chatLink.href = `/chat/${encodeURIComponent(agent.name)}`;
    chat.appendChild(chatLink);
    tr.appendChild(chat);
    return tr;
  }

  function logEvent(frame) {
    const list = document.getElementById("events");
    if (!list) return;
    const d = frame.data;
    const what = d.name || d.agent || d.task || d.function || "";
    const li = document.createElement("li");
    li.appendChild(timeElement(frame.time));
    li.appendChild(document.createTextNode(` ${frame.topic} ${what}${d.session ? " " + d.session : ""}${d.action ? " " + d.action : ""}${d.status ? " " + d.status : ""}`));
    list.prepend(li);
    while (list.children.length > 50) list.lastChild.remove();
    const empty = document.getElementById("no-events");
    if (empty) empty.hidden = true;
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

  function stateBadge(state) {
    return text("span", state, `state state-${state}`);
  }

  function sessionRow(s) {
    const tr = document.createElement("tr");
    tr.dataset.session = s.session_id;
    const id = document.createElement("td");
    const link = text("a", s.session_id);
    link.href = `/sessions/${encodeURIComponent(s.session_id)}`;
    id.appendChild(link);
    tr.appendChild(id);
    tr.appendChild(text("td", s.agent || ""));
    tr.appendChild(text("td", s.user || ""));
    const state = document.createElement("td");
    state.className = "state-cell";
    state.appendChild(stateBadge(s.state));
    tr.appendChild(state);
    tr.appendChild(text("td", String(s.restarts), "num"));
    tr.appendChild(text("td", String(s.turns), "num"));
    const last = document.createElement("td");
    last.appendChild(timeElement(s.last_activity));
    tr.appendChild(last);
    tr.appendChild(text("td", `${s.tokens_in} / ${s.tokens_out}`, "num tokens"));
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
      if (old && topic === "agent.stopped") old.querySelector(".state-cell").replaceChildren(stateBadge("stopped"));
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
    const empty = document.getElementById("no-sessions");
    if (empty) empty.hidden = true;
  }

  function common() {
    themeToggle();
    logoutButton();
    localizeTimes();
    document.body.addEventListener("htmx:afterSwap", (ev) => localizeTimes(ev.target));
  }

  function indexPage() {
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

  function sessionsPage() {
    connect(["agent.*", "turn.*"], (frame) => {
      if (frame.data.session && frame.data.user !== null) upsertSession(frame.data.session, frame.topic);
    });
  }

  function sessionPage(id) {
    const refresh = () => {
      const panel = document.getElementById("session-panel");
      if (panel && window.htmx) htmx.trigger(panel, "refresh");
    };
    // a turn's events come in bursts, and the monitor counts an event as the page gets it:
    // reload once the burst is over
    // (and once more a little later, for what is committed just after its event)
    let pending = [];
    connect(["agent.*", "turn.*"], (frame) => {
      if (frame.data.session !== id) return;
      pending.forEach(clearTimeout);
      pending = [setTimeout(refresh, 250), setTimeout(refresh, 1500)];
    });
    let outcome = null;  // the last action's result, shown again in each reloaded panel
    const showOutcome = () => {
      const el = document.getElementById("action-result");
      if (el && outcome) { el.textContent = outcome.message; el.className = outcome.ok ? "muted" : "error"; }
    };
    document.body.addEventListener("htmx:afterSwap", showOutcome);
    document.addEventListener("click", async (ev) => {
      const button = ev.target.closest("#session-actions button[data-action]");
      if (!button || button.disabled) return;
      const action = button.dataset.action;
      if (action === "stop" && !confirm(`Stop the session ${id}? Its conversation stays stored.`)) return;
      const base = `/api/v1/sessions/${encodeURIComponent(id)}`;
      const result = action === "stop" ? await api("DELETE", base)
        : await api("POST", `${base}/${action}`);
      let message;
      if (!result.ok) message = problemText(result);
      else if (action === "cancel") message = result.data.cancelled ? "turn cancelled" : "no turn was running";
      else if (action === "restart") message = result.data.restarted ? "restarted" : "killed; restarting";
      else message = "stopped";
      outcome = { message, ok: result.ok };
      showOutcome();
      refresh();
    });
  }

  // --- chat ----------------------------------------------------------------------------------
  function bubble(role, model) {
    const li = document.createElement("li");
    li.className = `msg ${role}`;
    li.dataset.role = role;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.appendChild(text("span", role === "user" ? "You" : role === "error" ? "Error" : "Agent"));
    meta.appendChild(timeElement(new Date()));
    if (model) meta.appendChild(text("span", model));
    li.appendChild(meta);
    if (role === "agent") {
      const tools = document.createElement("div");
      tools.className = "tools";
      tools.hidden = true;
      li.appendChild(tools);
    }
    const body = document.createElement("div");
    body.className = "body";
    li.appendChild(body);
    return li;
  }

  function toolChip(f) {
    const chip = document.createElement("details");
    chip.className = "tool";
    chip.dataset.call = f.tool_call_id || "";
    chip.appendChild(text("summary", f.tool_name));
    const io = document.createElement("div");
    io.className = "tool-io";
    io.appendChild(text("div", "arguments", "muted"));
    io.appendChild(text("pre", JSON.stringify(f.args, null, 2), "args"));
    io.appendChild(text("div", "result", "muted"));
    io.appendChild(text("pre", "…", "result"));
    chip.appendChild(io);
    return chip;
  }

  function chatPage(agent, user) {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/dashboard/chat/${encodeURIComponent(agent)}/ws?user=${encodeURIComponent(user)}`);
    const transcript = document.getElementById("transcript");
    const form = document.getElementById("chat-form");
    const input = document.getElementById("chat-input");
    const send = document.getElementById("chat-send");
    const live = document.getElementById("live");
    const empty = document.getElementById("chat-empty");
    let sessionId = document.getElementById("session-id").textContent;
    let reply = null;
    let busy = true;  // until the session frame
    const scroll = () => transcript.lastElementChild && transcript.lastElementChild.scrollIntoView({ block: "end" });
    const add = (li) => { transcript.appendChild(li); if (empty) empty.hidden = true; scroll(); return li; };
    const ready = () => { busy = false; send.disabled = false; };
    const current = () => {
      if (!reply) { reply = add(bubble("agent")); reply.classList.add("streaming"); reply.querySelector(".body").classList.add("typing"); }
      return reply;
    };
    scroll();
    ws.onopen = () => { if (live) { live.textContent = "live"; live.className = "live on"; } };
    ws.onclose = (ev) => {
      if (live) { live.textContent = "offline"; live.className = "live off"; }
      send.disabled = true;
      busy = true;
      if (ev.code === 4401) { location.href = "/login"; return; }
      const why = { 4403: "this session belongs to another user", 4404: "no such agent" }[ev.code];
      const li = add(bubble("error"));
      li.querySelector(".body").textContent = `The connection closed${why ? ": " + why : ""}. Reload the page to reconnect.`;
    };
    ws.onmessage = (msg) => {
      const f = JSON.parse(msg.data);
      if (f.type === "session") {
        sessionId = f.session_id;
        document.getElementById("session-id").textContent = f.session_id;
        ready();
      } else if (f.type === "delta") {
        current().querySelector(".body").textContent += f.text;
        scroll();
      } else if (f.type === "tool_call_started") {
        const tools = current().querySelector(".tools");
        tools.hidden = false;
        tools.appendChild(toolChip(f));
      } else if (f.type === "tool_call_finished") {
        const chip = reply && reply.querySelector(`details.tool[data-call="${CSS.escape(f.tool_call_id || "")}"]`);
        if (chip) {
          chip.querySelector(".result").textContent = f.error ? String(f.error) : JSON.stringify(f.result, null, 2);
          if (f.error) { chip.classList.add("tool-error"); chip.querySelector("summary").appendChild(text("span", " (failed)", "error")); }
        }
      } else if (f.type === "completed") {
        const li = current();
        const body = li.querySelector(".body");
        body.classList.remove("typing");
        li.classList.remove("streaming");
        body.innerHTML = f.html;  // rendered on the server, raw HTML escaped (routes/chat.py)
        li.dataset.done = "1";
        li.dataset.execution = f.execution_id;
        li.querySelector(".meta").appendChild(text("span", `${f.tokens_in} in / ${f.tokens_out} out`));
        reply = null;
        ready();
        scroll();
      } else if (f.type === "error") {
        if (reply) {
          const partial = reply.querySelector(".body");
          partial.classList.remove("typing");
          reply.classList.remove("streaming");
          if (!partial.textContent && reply.querySelector(".tools").hidden) reply.remove();
        }
        const li = add(bubble("error"));
        li.dataset.status = String(f.status);
        const body = li.querySelector(".body");
        body.appendChild(text("strong", f.title || "Error"));
        if (f.detail) body.appendChild(document.createTextNode(": " + f.detail));
        if (f.execution_id) {
          li.dataset.execution = f.execution_id;
          body.appendChild(document.createTextNode(" "));
          const link = text("a", `execution ${f.execution_id.slice(0, 12)}…`);
          link.href = `/sessions/${encodeURIComponent(sessionId)}#executions`;
          body.appendChild(link);
        }
        reply = null;
        ready();
      }
    };
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const message = input.value;
      if (!message.trim() || busy) return;
      add(bubble("user")).querySelector(".body").textContent = message;
      ws.send(JSON.stringify({ message }));
      input.value = "";
      busy = true;
      send.disabled = true;
      current();
    });
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        form.requestSubmit();
      }
    });
    input.focus();
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

  common();
  return {
    api, chatPage, indexPage, localizeTimes, loginPage, problemText,
    sessionPage, sessionsPage, timeElement,
  };
})();
