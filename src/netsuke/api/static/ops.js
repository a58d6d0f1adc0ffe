// Netsuke operations pages: tree, agents, tasks, dead letters, admin pages. No build step.
// Live updates: the events WebSocket; a page re-reads itself (same URL) and swaps the regions
// that changed. Actions call /api/v1/<path> with the key cookie and the X-Netsuke-Dashboard
// header (with this origin, the only way the API takes the cookie for a write).
"use strict";
const NetsukeOps = (() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

  function localTimes(root = document) {
    const all = $$("time[datetime]", root);
    if (root.matches && root.matches("time[datetime]")) all.push(root);
    for (const el of all) {
      const iso = el.getAttribute("datetime");
      const d = new Date(iso);
      if (!iso || Number.isNaN(d.getTime())) continue;
      el.title = iso;
      el.textContent = d.toLocaleString();
    }
  }

  function timeEl(seconds) {
    const el = document.createElement("time");
    const d = new Date(seconds * 1000);
    el.dateTime = d.toISOString();
    el.title = el.dateTime;
    el.textContent = d.toLocaleString();
    return el;
  }

  function connect(topics, onEvent) {
    const live = $("#live");
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    let delay = 500;
    function open() {
      const ws = new WebSocket(`${proto}//${location.host}/api/v1/events?topics=${encodeURIComponent(topics.join(","))}`);
      ws.onmessage = (msg) => {
        const frame = JSON.parse(msg.data);
        if (frame.type === "welcome") {
          delay = 500;
          if (live) { live.textContent = "live"; live.className = "live on"; }
          document.body.dataset.opsLive = "1";
        } else if (frame.type === "event") {
          onEvent(frame);
        }
      };
      ws.onclose = (ev) => {
        if (live) { live.textContent = "offline"; live.className = "live off"; }
        document.body.dataset.opsLive = "0";
        if (ev.code === 4401) { location.href = "/login"; return; }
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 10000);
      };
    }
    open();
  }

  // Runs fn at once; calls made while it runs (or within gapMs after) collapse into one more
  // run afterwards: a page re-reads itself at most every gapMs however busy the node is.
  function coalesce(fn, gapMs = 0) {
    let running = false, again = false;
    return async function run(...args) {
      if (running) { again = true; return; }
      running = true;
      try { await fn(...args); } finally {
        if (gapMs) await new Promise((ok) => setTimeout(ok, gapMs));
        running = false;
        if (again) { again = false; run(...args); }
      }
    };
  }
  const GAP_MS = 300;

  const KEYS = ["session", "task", "agent", "key", "hook", "version", "workflow", "run", "entry", "function"];

  // Where the keyboard focus is inside `region`, as something that survives a re-render: the
  // row it is in (its data-* key) and its place among that row's focusable elements.
  function focusMark(region) {
    const el = document.activeElement;
    if (!el || el === document.body || !region.contains(el)) return null;
    const row = el.closest(KEYS.map((k) => `[data-${k}]`).join(","));
    if (!row) return el.id ? { id: el.id } : null;
    const key = KEYS.find((k) => row.dataset[k] !== undefined);
    const all = $$("a, button, input, select, textarea, summary", row);
    return { key, value: row.dataset[key], index: all.indexOf(el) };
  }

  function refocus(region, mark) {
    if (!mark) return;
    if (mark.id) { const el = document.getElementById(mark.id); if (el) el.focus(); return; }
    const row = $(`[data-${mark.key}="${CSS.escape(mark.value)}"]`, region);
    const el = row && $$("a, button, input, select, textarea, summary", row)[mark.index];
    if (el) el.focus();
  }

  async function refresh(ids) {
    const r = await fetch(location.href, { headers: { Accept: "text/html" } });
    if (!r.ok) return false;
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    for (const id of ids) {
      const fresh = doc.getElementById(id);
      const old = document.getElementById(id);
      if (fresh && old) {
        const mark = focusMark(old);
        old.replaceWith(fresh);
        localTimes(fresh);
        refocus(fresh, mark);
      }
    }
    return true;
  }

  async function act(method, path, body, headers = {}) {
    const h = { "X-Netsuke-Dashboard": "1", Accept: "application/json", ...headers };
    if (body !== undefined) h["Content-Type"] = "application/json";
    const r = await fetch(`/api/v1/${path}`, {
      method, headers: h, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await r.json(); } catch (e) { /* 204 */ }
    return { ok: r.ok, status: r.status, data };
  }

  function problem(res) {
    const d = res.data;
    if (d && d.title) return `${d.title}${d.detail ? ": " + d.detail : ""}`;
    return `the request failed (HTTP ${res.status})`;
  }

  function say(text, bad) {
    const el = $("#action-status");
    if (!el) return;
    el.textContent = text;
    el.classList.toggle("ops-field-error", !!bad);
  }

  function fieldErrors(errors, root = document) {
    for (const el of $$(".ops-field-error[data-field]", root)) el.textContent = "";
    for (const el of $$("[aria-invalid]", root)) el.removeAttribute("aria-invalid");
    const rest = [];
    for (const e of errors) {
      const top = String(e.field).split(/[.[]/)[0];
      const slot = $(`.ops-field-error[data-field="${CSS.escape(top)}"]`, root);
      if (slot && !slot.closest("[hidden]")) {
        slot.textContent += (slot.textContent ? "; " : "") + (top === e.field ? e.reason : `${e.field}: ${e.reason}`);
        const input = $(`[name="${CSS.escape(top)}"]`, root);
        if (input) input.setAttribute("aria-invalid", "true");
      } else {
        rest.push(e);
      }
    }
    return rest;
  }

  function logout() {
    const button = $("#logout");
    if (!button || button.dataset.ops) return;
    button.dataset.ops = "1";
    button.addEventListener("click", async () => {
      await fetch("/dashboard/logout", { method: "POST" });
      location.href = "/login";
    });
  }

  function start() { localTimes(); logout(); }

  // ---------------------------------------------------------------- generic live page

  function live(topics, ids, onEvent) {
    start();
    const go = coalesce(() => refresh(ids), GAP_MS);
    connect(topics, (frame) => { if (onEvent) onEvent(frame); go(); });
  }

  // ---------------------------------------------------------------- tree

  function treePage() {
    start();
    const stats = window.opsTree = { loadedAt: Date.now(), renders: [] };
    let pending = [];
    const go = coalesce(async () => {
      const frames = pending; pending = [];
      const ok = await refresh(["tree", "tree-updated"]);
      if (!ok) return;
      const rendered = Date.now();
      for (const f of frames) stats.renders.push({ topic: f.topic, session: f.data.session || null, eventTime: f.time * 1000, received: f.received, rendered });
    }, GAP_MS);
    connect(["agent.*", "process.restarted", "supervisor.gave_up"], (frame) => {
      frame.received = Date.now();
      pending.push(frame);
      go();
    });
  }

  // ---------------------------------------------------------------- agents

  function lineDiff(a, b) {
    const x = a.split("\n"), y = b.split("\n");
    const n = x.length, m = y.length;
    const L = Array.from({ length: n + 1 }, () => new Int32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) {
      L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
    }
    const out = [];
    let i = 0, j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && x[i] === y[j]) { out.push(["same", "  " + x[i]]); i++; j++; }
      else if (j < m && (i >= n || L[i][j + 1] >= L[i + 1][j])) { out.push(["add", "+ " + y[j]]); j++; }
      else { out.push(["del", "- " + x[i]]); i++; }
    }
    return out;
  }

  function showDiff() {
    const box = $("#diff");
    const texts = JSON.parse($("#version-yaml").textContent);
    const numbers = JSON.parse($("#version-numbers").textContent);
    if (numbers.length < 2) return;
    const a = Number(($('input[name="diff-a"]:checked') || {}).value);
    const b = Number(($('input[name="diff-b"]:checked') || {}).value);
    const ta = texts[numbers.indexOf(a)], tb = texts[numbers.indexOf(b)];
    box.replaceChildren();
    if (ta === undefined || tb === undefined) return;
    const head = document.createElement("span");
    head.className = "same";
    head.textContent = `version ${a} → version ${b}`;
    box.appendChild(head);
    for (const [kind, line] of lineDiff(ta.replace(/\n$/, ""), tb.replace(/\n$/, ""))) {
      const span = document.createElement("span");
      span.className = kind;
      span.textContent = line;
      box.appendChild(span);
    }
  }

  const charts = [];

  async function drawCharts(name) {
    const r = await fetch(`/api/v1/agents/${encodeURIComponent(name)}/series?window=3600&step=60`);
    if (!r.ok || typeof uPlot === "undefined") return;
    const s = await r.json();
    const total = s.turns.reduce((x, y) => x + y, 0);
    $("#charts-empty").hidden = total > 0;
    $("#charts").hidden = total === 0;
    if (total === 0) return;
    const data = {
      "chart-turns": [[s.t, s.turns, s.errors], ["turns", "errors"], ["--accent", "--err"]],
      "chart-latency": [[s.t, s.p50_ms, s.p99_ms], ["p50 ms", "p99 ms"], ["--accent", "--warn"]],
      "chart-tokens": [[s.t, s.tokens_in, s.tokens_out], ["tokens in", "tokens out"], ["--accent", "--ok"]],
    };
    const css = getComputedStyle(document.body);
    const color = (v, dflt) => (css.getPropertyValue(v) || "").trim() || dflt;
    const fg = color("--fg", "#1d2430");
    const grid = color("--border", "#e5e7eb");
    for (const [id, [values, labels, colors]] of Object.entries(data)) {
      const el = document.getElementById(id);
      const old = charts.find((c) => c.root.parentElement === el);
      if (old) { old.setData(values); continue; }
      const width = Math.max(260, el.clientWidth - 8);
      const opts = {
        width, height: 180, legend: { show: true },
        axes: [{ stroke: fg, grid: { stroke: grid } }, { stroke: fg, grid: { stroke: grid }, size: 50 }],
        series: [{}, ...labels.map((label, k) => ({
          label, stroke: color(colors[k], ["#7c3aed", "#b91c1c"][k] || "#15803d"), width: 2, spanGaps: true,
          points: { show: true, size: 4 },
        }))],
      };
      charts.push(new uPlot(opts, values, el));
    }
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

  function agentPage(name, operator) {
    start();
    if ($("#version-numbers")) {
      showDiff();
      document.addEventListener("change", (ev) => { if (ev.target.name === "diff-a" || ev.target.name === "diff-b") showDiff(); });
    }
    document.addEventListener("click", async (ev) => {
      const button = ev.target.closest("button.rollback");
      if (!button) return;
      button.disabled = true;
      const version = Number(button.dataset.version);
      const res = await act("POST", `agents/${encodeURIComponent(name)}/rollback`, { version });
      if (res.ok) say(`Rolled back: version ${res.data.version} has the content of version ${version}.`);
      else { say(problem(res), true); button.disabled = false; }
    });
    if (!operator) {
      connect(["definition.changed"], (f) => { if (f.data.kind === "agent" && f.data.name === name) location.reload(); });
      return;
    }
    const redraw = coalesce(async () => { await drawCharts(name); await new Promise((ok) => setTimeout(ok, 1000)); });
    redraw();
    // the charts take their colours from the theme: rebuilt when it changes
    const rebuild = () => { for (const c of charts.splice(0)) c.destroy(); drawCharts(name); };
    new MutationObserver(rebuild).observe(document.documentElement, { attributes: true, attributeFilter: ["data-theme"] });
    if (window.matchMedia) matchMedia("(prefers-color-scheme: dark)").addEventListener("change", rebuild);
    window.addEventListener("resize", () => {
      for (const c of charts) c.setSize({ width: Math.max(260, c.root.parentElement.clientWidth - 8), height: 180 });
    });
    const metrics = coalesce(() => refreshMetrics(name), GAP_MS);
    connect(["definition.changed", "agent.*", "turn.*"], (frame) => {
      if (frame.topic === "definition.changed") {
        if (frame.data.kind === "agent" && frame.data.name === name) location.reload();
        return;
      }
      if (frame.data.agent !== name) return;
      const logs = $("#logs");
      const d = frame.data;
      const li = document.createElement("li");
      li.append(timeEl(frame.time), ` ${frame.topic} ${d.session || "-"} ${d.status || d.reason || ""}`);
      logs.prepend(li);
      $("#no-logs").hidden = true;
      while (logs.children.length > 200) logs.lastChild.remove();
      metrics();
      if (frame.topic === "turn.finished") redraw();
    });
  }

  function agentEditor(name, version) {
    start();
    const form = $("#agent-form");
    const yamlBox = $("#f-yaml");
    const statusEl = $("#check-status");
    const other = $("#other-errors");
    const save = $("#save");
    const fields = ["name", "description", "model", "system_prompt", "capabilities", "tools", "delegates", "max_chain_depth"];
    const lists = new Set(["capabilities", "tools", "delegates"]);
    let mode = "form";
    // the whole definition: the form edits some fields, the others are kept as they are
    let draft = JSON.parse($("#initial-draft").textContent);

    function fromForm() {
      const d = Object.assign({}, draft || {});
      for (const f of fields) {
        const el = document.getElementById(`f-${f}`);
        let v = el.value;
        if (lists.has(f)) v = v.split(",").map((s) => s.trim()).filter(Boolean);
        else if (f === "max_chain_depth") v = el.value === "" ? 3 : Number(el.value);
        d[f] = v;
      }
      return d;
    }
    function toForm(d) {
      for (const f of fields) {
        const el = document.getElementById(`f-${f}`);
        el.value = lists.has(f) ? (d[f] || []).join(", ") : (d[f] ?? "");
      }
    }
    function show(errors) {
      const rest = fieldErrors(errors, form);
      other.replaceChildren(...rest.map((e) => { const li = document.createElement("li"); li.textContent = `${e.field}: ${e.reason}`; return li; }));
    }
    let seq = 0;
    async function check() {
      const mine = ++seq;
      const body = mode === "yaml" ? { yaml: yamlBox.value } : fromForm();
      statusEl.textContent = "Checking…";
      const res = await act("POST", "agent-drafts/check", body);
      if (mine !== seq) return null;
      if (res.ok) {
        if (version !== null && res.data.draft.name !== name) {
          show([{ field: mode === "yaml" ? "yaml" : "name", reason: `an agent cannot be renamed (this is ${name})` }]);
          statusEl.textContent = "1 problem";
          return false;
        }
        draft = res.data.draft;
        if (mode === "form") yamlBox.value = res.data.yaml; else toForm(draft);
        show([]);
        statusEl.textContent = "Valid: the node would accept this definition.";
        form.dataset.valid = "1";
        return true;
      }
      form.dataset.valid = "0";
      const errors = res.status === 422 && res.data && res.data.errors ? res.data.errors : [{ field: "(root)", reason: problem(res) }];
      show(errors);
      statusEl.textContent = `${errors.length} problem${errors.length === 1 ? "" : "s"}`;
      return false;
    }
    let timer = null;
    form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(check, 250); });
    function tab(to) {
      mode = to;
      $("#pane-form").hidden = to !== "form";
      $("#pane-yaml").hidden = to !== "yaml";
      $("#tab-form").setAttribute("aria-selected", String(to === "form"));
      $("#tab-yaml").setAttribute("aria-selected", String(to === "yaml"));
      check();
    }
    $("#tab-form").addEventListener("click", () => tab("form"));
    $("#tab-yaml").addEventListener("click", () => tab("yaml"));
    $(".ops-tabs").addEventListener("keydown", (ev) => {
      if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
        const to = mode === "form" ? "yaml" : "form";
        tab(to);
        $(`#tab-${to}`).focus();
      }
    });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearTimeout(timer);
      save.disabled = true;
      try {
        if (!(await check())) return;
        let res;
        if (version === null) {
          res = await act("POST", "agents", draft);
        } else {
          const content = Object.assign({}, draft);
          delete content.name;
          res = await act("PUT", `agents/${encodeURIComponent(name)}`, content, { "If-Match": `"${version}"` });
        }
        if (res.ok) { location.href = `/agents/${encodeURIComponent(res.data.name)}`; return; }
        const errors = res.status === 422 && res.data.errors ? res.data.errors : [{ field: "(root)", reason: problem(res) }];
        show(errors);
        statusEl.textContent = res.status === 412 ? "Someone saved a newer version meanwhile: reload to edit it." : "Not saved.";
      } finally { save.disabled = false; }
    });
    check();
  }

  // ---------------------------------------------------------------- tasks

  function taskPage(id) {
    start();
    const go = coalesce(() => refresh(["task-region"]), GAP_MS);
    connect(["task.*"], (frame) => {
      const d = frame.data;
      if (d.task !== id) return;
      const li = document.createElement("li");
      const what = d.error ? `: ${d.error}` : "";
      li.append(timeEl(frame.time), ` ${frame.topic}${d.attempt ? " attempt " + d.attempt : ""}${what}`);
      $("#attempt-log").appendChild(li);
      $("#no-attempts").hidden = true;
      go();
    });
  }

  function deadLetters() {
    start();
    const go = coalesce(() => refresh(["dead-region"]), GAP_MS);
    connect(["task.*"], () => go());
    document.addEventListener("click", async (ev) => {
      const requeue = ev.target.closest("button.requeue");
      if (requeue) {
        requeue.disabled = true;
        const res = await act("POST", `dead-letters/${encodeURIComponent(requeue.dataset.task)}/requeue`);
        say(res.ok ? `Requeued ${requeue.dataset.task}.` : problem(res), !res.ok);
        if (!res.ok) requeue.disabled = false;
        go();
        return;
      }
      const all = ev.target.closest("#purge-all");
      const some = ev.target.closest("#purge-selected");
      if (!all && !some) return;
      const ids = all ? null : $$("input.pick:checked").map((el) => el.value);
      if (ids !== null && ids.length === 0) { say("Select the dead letters to purge first.", true); return; }
      const what = ids === null ? "every dead letter" : `${ids.length} dead letter${ids.length === 1 ? "" : "s"}`;
      if (!confirm(`Purge ${what}? This cannot be undone.`)) return;
      const res = await act("POST", "dead-letters/purge", ids === null ? {} : { ids });
      say(res.ok ? `Purged ${res.data.purged}.` : problem(res), !res.ok);
      go();
    });
  }

  function workflowsPage() {
    live(["workflow.*"], ["workflows-region"]);
    document.addEventListener("click", async (ev) => {
      const b = ev.target.closest("button.start-run");
      if (!b) return;
      let input;
      try { input = JSON.parse($("#run-input").value || "null"); }
      catch (e) { say(`input: not JSON (${e.message})`, true); return; }
      const res = await act("POST", `workflows/${encodeURIComponent(b.dataset.workflow)}/runs`, { input });
      say(res.ok ? `Started run ${res.data.run_id} of ${b.dataset.workflow}.` : problem(res), !res.ok);
    });
  }

  // ---------------------------------------------------------------- cluster

  const NODE_EVENTS = { "cluster.node_joined": "joined", "cluster.node_left": "left", "cluster.node_down": "down", "cluster.node_fenced": "fenced", "cluster.sessions_moved": "sessions moved" };

  function clusterPage() {
    start();
    // lease ages and time left move on their own: re-read every 5 s, and on each node event
    const go = coalesce(() => refresh(["cluster-region", "sessions-region"]), GAP_MS);
    setInterval(go, 5000);
    connect(["cluster.*"], (frame) => {
      const d = frame.data || {};
      const li = document.createElement("li");
      li.dataset.topic = frame.topic;
      li.append(timeEl(frame.time), " ");
      const what = document.createElement("strong");
      what.textContent = NODE_EVENTS[frame.topic] || frame.topic;
      const who = document.createElement("code");
      if (frame.topic === "cluster.sessions_moved") {
        // failover: `count` sessions of the gone node `from` now run on `to`
        who.textContent = d.from || "";
        const to = document.createElement("code");
        to.textContent = d.to || d.node || frame.node;
        li.append(what, ` ${d.count ?? ""} from `, who, " to ", to);
      } else {
        who.textContent = d.peer || d.node || frame.node;
        li.append(what, " ", who);
      }
      const why = d.cause || d.reason;
      if (why) li.append(` (${why})`);
      if (d.peer) li.append(` · seen by ${d.node || frame.node}`);
      $("#cluster-events").prepend(li);
      const empty = $("#no-events");
      if (empty) empty.remove();
      go();
    });
  }

  // ---------------------------------------------------------------- keys, webhooks

  function secretForm(formSel, path, body, regionId, onDone) {
    const form = $(formSel);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const res = await act("POST", path, body());
      const errors = res.status === 422 && res.data && res.data.errors ? res.data.errors : [];
      const rest = fieldErrors(errors);
      if (res.ok) {
        $("#secret").textContent = res.data.secret || "";
        $("#new-secret").hidden = !res.data.secret;
        say(onDone(res.data));
        form.reset();
        await refresh([regionId]);
      } else {
        say(rest.length ? rest.map((e) => `${e.field}: ${e.reason}`).join("; ") : errors.length ? "" : problem(res), true);
      }
    });
  }

  function keysPage() {
    start();
    secretForm("#key-form", "keys", () => ({ name: $("#key-name").value.trim(), role: $("#key-role").value }),
      "keys-region", (d) => `Issued ${d.key ? d.key.prefix : ""} for ${d.key ? d.key.name : ""}.`);
    document.addEventListener("click", async (ev) => {
      const b = ev.target.closest("button.revoke");
      if (!b) return;
      if (!confirm(`Revoke key ${b.dataset.key}? Clients using it get 401 from now on.`)) return;
      const res = await act("DELETE", `keys/${encodeURIComponent(b.dataset.key)}`);
      say(res.ok ? `Revoked ${b.dataset.key}.` : problem(res), !res.ok);
      await refresh(["keys-region"]);
    });
  }

  function webhooksPage() {
    start();
    secretForm("#hook-form", "webhooks", () => ({
      url: $("#hook-url").value.trim(),
      topics: $("#hook-topics").value.split(",").map((s) => s.trim()).filter(Boolean),
    }), "hooks-region", (d) => `Registered ${d.webhook ? d.webhook.url : ""}.`);
    document.addEventListener("click", async (ev) => {
      const b = ev.target.closest("button.delete-hook");
      if (!b) return;
      if (!confirm("Delete this webhook and its delivery log?")) return;
      const res = await act("DELETE", `webhooks/${encodeURIComponent(b.dataset.hook)}`);
      say(res.ok ? "Deleted." : problem(res), !res.ok);
      await refresh(["hooks-region"]);
    });
  }

  return { act, agentEditor, agentPage, clusterPage, deadLetters, keysPage, live, localTimes, taskPage, treePage, webhooksPage, workflowsPage };
})();
