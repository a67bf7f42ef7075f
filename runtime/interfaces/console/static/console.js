// Stele console: what the pages do without reloading. No framework, no build step.
// Everything that comes from a journal reaches the document through textContent or
// element properties, never as markup.
(() => {
  "use strict";

  const meta = (name) => {
    const node = document.querySelector(`meta[name="${name}"]`);
    return node ? node.content : "";
  };
  const prefix = meta("stele-prefix");
  const csrf = meta("stele-csrf");
  const KINDS = new Set(["message", "effect", "attempt", "event", "send", "request", "timer", "cancel", "reply"]);
  const CONDITIONS = new Set(["active", "idle", "waiting", "suspended"]);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // A link the server made for this console (never a javascript: URL or another site).
  function local(url) {
    return typeof url === "string" && (url.startsWith(prefix + "/") || url.startsWith("?"));
  }

  let toastTimer = null;
  function say(text, bad) {
    const box = document.getElementById("status");
    if (!box) return;
    box.textContent = text;
    box.classList.toggle("bad", Boolean(bad));
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, bad ? 12000 : 6000);
  }

  async function post(path, body) {
    let answer;
    try {
      answer = await fetch(prefix + path, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-Stele-CSRF": csrf },
        body: JSON.stringify(body),
      });
    } catch (err) {
      return { ok: false, status: 0, data: { message: `the server cannot be reached: ${err.message}` } };
    }
    let data;
    try {
      data = await answer.json();
    } catch {
      data = { message: `${answer.status} ${answer.statusText}` };
    }
    return { ok: answer.ok, status: answer.status, data };
  }

  // The confirmation every action goes through: a modal dialog saying what will be done.
  function confirmAction(title, text, detail) {
    const dialog = document.getElementById("confirm");
    if (!dialog || typeof dialog.showModal !== "function") return Promise.resolve(window.confirm(text));
    document.getElementById("confirm-title").textContent = title;
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-detail").textContent = detail || "";
    document.getElementById("confirm-ok").textContent = title;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "cancel";
      dialog.showModal();
      document.getElementById("confirm-cancel").focus();
    });
  }

  const streamBadge = document.getElementById("stream-state");
  function live(url, handlers) {
    if (!url || !local(url) || typeof EventSource === "undefined") return null;
    const source = new EventSource(url);
    source.onopen = () => {
      if (streamBadge) { streamBadge.hidden = false; streamBadge.textContent = "updating live"; }
    };
    source.onerror = () => {
      if (streamBadge) { streamBadge.hidden = false; streamBadge.textContent = "reconnecting…"; }
    };
    for (const [name, handle] of Object.entries(handlers)) {
      source.addEventListener(name, (ev) => handle(JSON.parse(ev.data)));
    }
    source.addEventListener("problem", (ev) => say(JSON.parse(ev.data).message, true));
    window.addEventListener("pagehide", () => source.close());
    return source;
  }

  const number = (n) => (typeof n === "number" ? n.toLocaleString("en") : String(n));

  // -- sign in and out -----------------------------------------------------------------------

  const login = document.getElementById("login");
  if (login) {
    login.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const error = document.getElementById("login-error");
      const r = await post("/login", { token: login.elements.token.value });
      if (r.ok) {
        const next = login.dataset.next;
        window.location.assign(local(next) ? next : prefix + "/");
      } else {
        error.textContent = r.data.message || "not signed in";
        error.hidden = false;
      }
    });
  }
  const signOut = document.getElementById("sign-out");
  if (signOut) {
    signOut.addEventListener("click", async () => {
      await post("/logout", {});
      window.location.assign(prefix + "/login");
    });
  }

  // -- the overview ------------------------------------------------------------------------------

  function actorRow(row) {
    const tr = el("tr");
    tr.dataset.address = row.address;
    const th = el("th");
    th.scope = "row";
    const a = el("a", null, row.address);
    if (local(row.href)) a.href = row.href;
    th.append(a);
    const status = el("td");
    const condition = CONDITIONS.has(row.condition) ? row.condition : "idle";
    status.append(el("span", `condition c-${condition}`, row.condition));
    if (row.detail) status.append(" ", el("span", "muted", row.detail));
    const last = el("td");
    const time = el("time", null, row.last_time);
    time.dateTime = row.last_iso;
    last.append(time);
    const pending = el("td", "num", number(row.pending));
    if (row.timers) pending.append(" ", el("span", "muted", `+${row.timers} timer${row.timers === 1 ? "" : "s"}`));
    const letters = el("td", "num");
    letters.append(row.dead_letters ? el("span", "warn", row.dead_letters) : "0");
    tr.append(th, el("td", null, row.type), status, last, el("td", "num", number(row.last_seq)), pending, letters);
    return tr;
  }

  const actorsTable = document.getElementById("actors");
  if (actorsTable) {
    live(actorsTable.dataset.live, {
      page(data) {
        const body = document.getElementById("actor-rows");
        body.replaceChildren(...data.rows.map(actorRow));
        document.getElementById("no-actors").hidden = data.rows.length > 0;
        for (const [key, value] of Object.entries(data.summary)) {
          const fact = document.querySelector(`[data-fact="${key}"]`);
          if (fact && typeof value === "number") fact.textContent = number(value);
        }
        if (data.runtime) {
          for (const key of ["active", "steps", "at_risk"]) {
            const fact = document.querySelector(`[data-fact="${key}"]`);
            if (fact && data.runtime[key] !== null) fact.textContent = number(data.runtime[key]);
          }
        }
      },
    });
  }

  // -- an actor: time travel -----------------------------------------------------------------------

  const timeline = document.getElementById("timeline");

  function showState(data) {
    document.getElementById("state-title").textContent = `State as of #${data.seq}`;
    document.getElementById("state-note").textContent = data.note;
    document.getElementById("state-label").textContent = `#${data.seq} ${data.label} · ${data.time}`;
    document.getElementById("state-entry").textContent = data.entry;
    document.getElementById("state-json").textContent = data.state === null ? "-" : data.state;
    const list = document.getElementById("state-changes");
    const items = data.changes.map((c) => {
      const li = el("li", `ch-${c.change === "added" || c.change === "removed" ? c.change : "changed"}`);
      li.append(el("code", null, c.path), " ", el("span", "what", c.change));
      if (c.before) li.append(" ", el("del", null, c.before));
      if (c.after) li.append(" ", el("ins", null, c.after));
      return li;
    });
    if (!items.length) items.push(el("li", "muted", "nothing (only events change state)"));
    list.replaceChildren(...items);
    document.getElementById("state-body").hidden = false;
  }

  async function select(position) {
    for (const node of timeline.querySelectorAll('.entry[aria-current="true"]')) node.removeAttribute("aria-current");
    const entry = document.getElementById(`entry-${position}`);
    if (entry) entry.setAttribute("aria-current", "true");
    document.getElementById("state-note").textContent = "Rebuilding the state…";
    let answer;
    try {
      answer = await fetch(`${timeline.dataset.stateUrl}&position=${encodeURIComponent(position)}`, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
    } catch (err) {
      say(`the server cannot be reached: ${err.message}`, true);
      return;
    }
    const data = await answer.json();
    if (!answer.ok) {
      document.getElementById("state-note").textContent = data.message;
      return;
    }
    showState(data);
    const url = new URL(window.location.href);
    url.searchParams.set("at", position);
    url.hash = `entry-${position}`;
    history.replaceState(null, "", url);
  }

  if (timeline) {
    timeline.addEventListener("click", (ev) => {
      const link = ev.target.closest("a.entry-main");
      if (!link || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.button !== 0) return;
      ev.preventDefault();
      select(link.dataset.position);
    });
  }

  // -- an actor: live ------------------------------------------------------------------------------

  function entryNode(e) {
    const kind = KINDS.has(e.kind) ? e.kind : "event";
    const li = el("li", `entry k-${kind}${e.ok === false ? " failed" : ""} new`);
    li.id = `entry-${e.position}`;
    li.dataset.position = e.position;
    const main = el("a", "entry-main");
    main.href = `?at=${e.position}#entry-${e.position}`;
    main.dataset.position = e.position;
    main.append(el("span", "seq", `#${e.seq}`), el("span", "label", e.label), el("span", "summary", e.summary));
    if (e.took) main.append(el("span", "took", e.took));
    const time = el("time", null, e.time.slice(11));
    time.dateTime = e.iso;
    main.append(time);
    li.append(main);
    if (e.link && local(e.link)) {
      const follow = el("a", "follow", e.link_text);
      follow.href = e.link;
      li.append(follow);
    }
    const details = el("details");
    details.append(el("summary", null, "payload"), el("pre", null, e.detail));
    li.append(details);
    return li;
  }

  function stepNode(e) {
    const section = el("section", "step s-open");
    section.dataset.step = e.step;
    const title = el("h3", "step-title");
    title.id = `step-${e.step}-${e.position}`;
    section.setAttribute("aria-labelledby", title.id);
    const handler = e.kind === "message" ? e.label.replace(/^message /, "") : "(continued)";
    const time = el("time", null, e.time);
    time.dateTime = e.iso;
    const muted = el("span", "muted", `message ${e.step} · `);
    muted.append(time);
    title.append(el("span", "handler", handler), " ", el("span", "step-status", "open"), " ", muted);
    section.append(title, el("ol", "entries"));
    return section;
  }

  function addEntry(steps, e) {
    if (document.getElementById(`entry-${e.position}`)) return;
    let section = steps.querySelector(`section.step[data-step="${CSS.escape(String(e.step))}"]`);
    const open = section && (section.classList.contains("s-open") || section.classList.contains("s-partial"));
    if (!open || e.kind === "message") {
      section = stepNode(e);
      steps.prepend(section);
    }
    section.querySelector("ol.entries").append(entryNode(e));
    if (e.kind === "reply") {
      const outcome = e.ok ? "ok" : "error";
      section.className = `step s-${outcome}`;
      section.querySelector(".step-status").textContent = outcome;
    }
  }

  function waitingForms(names) {
    const box = document.getElementById("promises");
    if (!box || !timeline) return;
    const address = timeline.dataset.address;
    const rendered = [...box.querySelectorAll('form[data-op="resolve"] input[name="name"][type="hidden"]')];
    const have = rendered.map((input) => input.value);
    for (const input of rendered) {
      if (!names.includes(input.value)) input.closest("form").remove();
    }
    names.filter((name) => !have.includes(name)).forEach((name, i) => {
      const form = el("form", "op");
      form.dataset.op = "resolve";
      form.dataset.confirm = `Resolve promise “${name}” of ${address} with this value? A promise is resolved once.`;
      const hiddenAddress = el("input");
      hiddenAddress.type = "hidden";
      hiddenAddress.name = "address";
      hiddenAddress.value = address;
      const hiddenName = el("input");
      hiddenName.type = "hidden";
      hiddenName.name = "name";
      hiddenName.value = name;
      const text = el("p", null, "A step waits on promise ");
      text.append(el("strong", null, name), ".");
      const id = `resolve-live-${Date.now()}-${i}`;
      const label = el("label", null, "Value (JSON)");
      label.htmlFor = id;
      const value = el("textarea");
      value.id = id;
      value.name = "value";
      value.rows = 2;
      value.required = true;
      value.value = "true";
      const button = el("button", "primary", `Resolve ${name}`);
      button.type = "submit";
      form.append(hiddenAddress, hiddenName, text, label, value, button);
      box.querySelector("h2").after(form);
    });
  }

  function inbox(items) {
    const list = document.getElementById("inbox");
    if (!list) return;
    list.replaceChildren(...items.map((p) => {
      const li = el("li");
      li.append(el("span", "muted", `#${p.id}`), ` ${p.kind} `, el("strong", null, p.handler), " ", el("code", null, p.payload));
      if (p.due) {
        const due = el("span", "muted", "due ");
        const time = el("time", null, p.due);
        time.dateTime = p.due_iso;
        due.append(time);
        li.append(" ", due);
      }
      if (p.attempts) li.append(" ", el("span", "warn", `${p.attempts} attempt(s)`));
      if (p.sender) li.append(" ", el("span", "muted", `from ${p.sender}`));
      return li;
    }));
    document.getElementById("inbox-empty").hidden = items.length > 0;
  }

  if (timeline && timeline.dataset.live) {
    const steps = document.getElementById("steps");
    live(timeline.dataset.live, {
      entries(list) {
        for (const e of list) addEntry(steps, e);
      },
      actor(a) {
        const condition = document.getElementById("actor-condition");
        condition.className = `condition c-${CONDITIONS.has(a.condition) ? a.condition : "idle"}`;
        condition.textContent = a.condition;
        document.getElementById("actor-detail").textContent = a.detail;
        document.getElementById("actor-length").textContent = number(a.last_seq);
        document.getElementById("actor-pending").textContent = number(a.pending);
        const last = document.getElementById("actor-last");
        last.textContent = a.last_time;
        last.dateTime = a.last_iso;
        waitingForms(a.waiting_for || []);
        inbox(a.inbox || []);
      },
    });
  }

  // -- actions: resolve, retry, drop, resume, send -------------------------------------------------

  function fieldValue(input) {
    const kind = input.dataset.input;
    const name = input.dataset.field;
    const raw = input.value;
    if (kind === "boolean") return [true, input.checked];
    if (raw === "" && kind !== "text") {
      if (input.required) throw new Error(`${name} is required`);
      return [false, null];
    }
    if (kind === "text") return [raw !== "" || input.required, raw];
    if (kind === "integer") {
      const n = Number(raw);
      if (!Number.isInteger(n)) throw new Error(`${name} must be a whole number`);
      return [true, n];
    }
    if (kind === "number") {
      const n = Number(raw);
      if (!Number.isFinite(n)) throw new Error(`${name} must be a number`);
      return [true, n];
    }
    try {
      return [true, JSON.parse(raw)];
    } catch (err) {
      throw new Error(`${name} is not JSON: ${err.message}`);
    }
  }

  function collect(form) {
    const op = form.dataset.op;
    const value = (name) => (form.elements[name] ? form.elements[name].value : "");
    if (op === "resume") return { address: value("address") };
    if (op === "retry" || op === "drop") return { id: Number(value("id")) };
    if (op === "resolve") {
      try {
        JSON.parse(value("value"));
      } catch (err) {
        throw new Error(`the value is not JSON: ${err.message}`);
      }
      return { address: value("address"), name: value("name"), value: value("value") };
    }
    if (op === "send") {
      const body = {};
      for (const input of form.querySelectorAll("[data-field]")) {
        const [use, got] = fieldValue(input);
        if (use) body[input.dataset.field] = got;
      }
      const mode = form.querySelector('input[name="mode"]:checked');
      return { address: value("address"), handler: form.dataset.handler, body, ask: !mode || mode.value === "ask" };
    }
    throw new Error(`unknown action ${op}`);
  }

  const TITLES = { resume: "Resume", retry: "Retry", drop: "Drop", resolve: "Resolve", send: "Send" };

  document.addEventListener("submit", async (ev) => {
    const form = ev.target.closest("form.op");
    if (!form) return;
    ev.preventDefault();
    const op = form.dataset.op;
    let body;
    try {
      body = collect(form);
    } catch (err) {
      say(err.message, true);
      return;
    }
    let detail = "";
    if (op === "send") detail = `${body.ask ? "ask" : "tell"} ${JSON.stringify(body.body, null, 2)}`;
    if (op === "resolve") detail = `${body.name} = ${body.value}`;
    if (!(await confirmAction(TITLES[op] || "Confirm", form.dataset.confirm || "Go ahead?", detail))) return;
    body.confirmed = true;
    const buttons = form.querySelectorAll("button");
    for (const b of buttons) b.disabled = true;
    const r = await post(`/api/${op}`, body);
    for (const b of buttons) b.disabled = false;
    if (op === "send") {
      const out = form.querySelector(".reply");
      const shown = r.ok ? r.data : r.data;
      out.textContent = `HTTP ${shown.status ?? r.status}\n${JSON.stringify(shown.body ?? shown, null, 2)}`;
      const good = r.ok && shown.status >= 200 && shown.status < 300;
      say(good ? `${body.handler}: HTTP ${shown.status}` : `${body.handler}: HTTP ${shown.status ?? r.status}`, !good);
      return;
    }
    say(r.data.message || (r.ok ? "done" : `HTTP ${r.status}`), !r.ok);
    if (r.ok && (op !== "resolve" || !(timeline && timeline.dataset.live))) {
      setTimeout(() => window.location.reload(), 700);
    }
  });

  // -- health ---------------------------------------------------------------------------------------

  function chart(id, points) {
    const svg = document.getElementById(id);
    if (!svg) return;
    const max = Math.max(1, ...points.map((p) => p[1]));
    const first = points.length ? points[0][0] : 0;
    const last = points.length ? points[points.length - 1][0] : 1;
    const span = Math.max(last - first, 1);
    const coords = points.map(([t, v]) => `${(((t - first) / span) * 600).toFixed(1)},${(118 - (v / max) * 112).toFixed(1)}`);
    svg.querySelector("polyline").setAttribute("points", coords.join(" "));
    const label = document.querySelector(`[data-chart-max="${id}"]`);
    if (label) label.textContent = number(Math.round(max * 100) / 100);
  }

  function charts(history) {
    chart("chart-commits", history.map((s) => [s[0], s[1]]));
    chart("chart-age", history.map((s) => [s[0], s[2]]));
  }

  const health = document.getElementById("health");
  if (health) {
    const initial = document.getElementById("history");
    if (initial) charts(JSON.parse(initial.textContent));
    live(health.dataset.live, {
      health(figures) {
        for (const node of health.querySelectorAll("[data-figure]")) {
          let value = figures;
          for (const part of node.dataset.figure.split(".")) value = value == null ? undefined : value[part];
          if (value === undefined) continue;
          if (value === null || value === "") node.textContent = node.dataset.none || "-";
          else if (typeof value === "boolean") node.textContent = value ? node.dataset.yes : node.dataset.no;
          else if (node.dataset.figure === "runtime.journal_failing") node.textContent = `failing: ${value}`;
          else node.textContent = number(value);
        }
        charts(figures.history || []);
      },
    });
  }

  // -- SQL --------------------------------------------------------------------------------------------

  const sqlForm = document.getElementById("sql-form");
  if (sqlForm) {
    const query = document.getElementById("sql-query");
    const info = document.getElementById("sql-info");
    const table = document.getElementById("sql-result");
    for (const example of document.querySelectorAll("[data-example]")) {
      example.addEventListener("click", () => {
        query.value = example.dataset.example;
        query.focus();
      });
    }
    sqlForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      info.textContent = "Running…";
      info.classList.remove("error");
      const r = await post("/api/sql", { query: query.value });
      if (!r.ok) {
        info.textContent = r.data.message || `HTTP ${r.status}`;
        info.classList.add("error");
        table.tHead.replaceChildren();
        table.tBodies[0].replaceChildren();
        return;
      }
      const head = el("tr");
      for (const column of r.data.columns) {
        const th = el("th", null, column);
        th.scope = "col";
        head.append(th);
      }
      table.tHead.replaceChildren(head);
      table.tBodies[0].replaceChildren(
        ...r.data.rows.map((row) => {
          const tr = el("tr");
          for (const value of row) tr.append(value === null ? el("td", "null", "NULL") : el("td", null, value));
          return tr;
        }),
      );
      const more = r.data.truncated ? " (more rows not shown)" : "";
      info.textContent = `${r.data.rows.length} row(s) in ${r.data.ms.toFixed(1)} ms${more}`;
    });
  }
})();
