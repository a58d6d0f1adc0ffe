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

  function indexPage() {
    logoutButton();
    connect(["definition.*", "agent.*", "turn.*", "task.*"], (frame) => {
      logEvent(frame);
      if (frame.topic === "definition.changed" && frame.data.kind === "agent") {
        upsertAgent(frame.data.name);
      }
    });
  }

  function agentPage(name) {
    logoutButton();
    connect(["definition.changed"], (frame) => {
      if (frame.data.kind === "agent" && frame.data.name === name) location.reload();
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

  return { agentPage, indexPage, loginPage };
})();
