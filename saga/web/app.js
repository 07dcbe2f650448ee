"use strict";
// The saga pages: poll the JSON API once a second and re-render; every button POSTs.
// Data is only ever written with textContent: nothing from a saga is parsed as HTML.
(() => {
  const POLL_MS = 1000;
  const LIST_POLL_MS = 2000;
  const $ = (selector) => document.querySelector(selector);

  async function api(path, method = "GET", body = undefined) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    if (res.status === 401) {
      location.assign("/login?next=" + encodeURIComponent(location.pathname));
      throw new Error("the session ended: log in again");
    }
    let data = null;
    try { data = await res.json(); } catch (_) { data = null; }
    if (!res.ok) {
      const detail = data && data.detail;
      throw new Error(typeof detail === "string" ? detail : (detail ? JSON.stringify(detail) : res.statusText));
    }
    return { status: res.status, data };
  }

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  const label = (status) => (status || "").replaceAll("_", " ");
  const badge = (status, prefix = "s") => el("span", { className: `badge ${prefix}-${status}`, text: label(status) });
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
  const clock = () => new Date().toLocaleTimeString();

  function showMessage(text, isError = false) {
    const node = $("#message");
    node.textContent = text;
    node.classList.toggle("error", isError);
    node.hidden = !text;
  }

  // -- the list of sagas ----------------------------------------------------------------
  const money = (amount, currency) => {
    if (!amount) return "";
    const zero = ["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"];
    const code = (currency || "").toLowerCase();
    const text = zero.includes(code) ? String(amount) : (amount / 100).toFixed(2);
    return (text + " " + code.toUpperCase()).trim();
  };
  const took = (seconds, running) => {
    if (seconds === null || seconds === undefined) return "";
    const s = Math.floor(seconds);
    const text = s < 60 ? (seconds < 10 ? seconds.toFixed(1) + "s" : s + "s")
      : s < 3600 ? `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`
      : `${Math.floor(s / 3600)}h ${String(Math.floor(s % 3600 / 60)).padStart(2, "0")}m`;
    return running ? text + " so far" : text;
  };
  let listTimer = null;

  function listFilter() {
    const form = $("#filter");
    const params = new URLSearchParams();
    const status = form.elements.status.value;
    const q = form.elements.q.value.trim();
    if (status) params.set("status", status);
    if (q) params.set("q", q);
    return params;
  }

  async function refreshList() {
    clearTimeout(listTimer);
    const params = listFilter();
    try {
      const { data } = await api("/api/sagas" + (params.size ? "?" + params : ""));
      const rows = data.map((s) => el("tr", { dataset: { status: s.status || s.execution } },
        el("td", { className: "id" }, el("a", { href: "/sagas/" + encodeURIComponent(s.saga_id), text: s.saga_id })),
        el("td", { className: "status" }, s.status ? badge(s.status) : el("span", { className: "muted", text: "(" + label(s.execution) + ")" }),
          s.world ? el("span", { className: "world", text: s.world }) : null),
        el("td", { className: "what", text: s.summary || s.request || "" }),
        el("td", { className: "amount", text: money(s.amount, s.currency) }),
        el("td", { text: when(s.started_at) }),
        el("td", { text: took(s.took_seconds, !s.closed_at) }),
      ));
      $("#sagas tbody").replaceChildren(...rows);
      $("#empty").hidden = data.length > 0 || params.size > 0;
      $("#none-match").hidden = data.length > 0 || params.size === 0;
      $("#refreshed").textContent = "updated " + clock();
      showMessage("");
    } catch (err) {
      showMessage(err.message, true);
    }
    listTimer = setTimeout(refreshList, LIST_POLL_MS);
  }

  function startList() {
    const form = $("#filter");
    const given = new URLSearchParams(location.search);
    form.elements.status.value = given.get("status") || "";
    form.elements.q.value = given.get("q") || "";
    const apply = (event) => {
      if (event) event.preventDefault();
      const params = listFilter();
      history.replaceState(null, "", location.pathname + (params.size ? "?" + params : ""));
      refreshList();
    };
    form.addEventListener("submit", apply);
    form.elements.status.addEventListener("change", apply);
    refreshList();
  }

  // -- one saga -------------------------------------------------------------------------
  const sagaId = decodeURIComponent(location.pathname.replace(/^\/sagas\//, ""));
  const sagaApi = (action = "") => "/api/sagas/" + encodeURIComponent(sagaId) + (action ? "/" + action : "");
  let previous = null;
  let stepsKey = "";
  let busy = false;

  function log(text) {
    $("#log").append(el("li", {}, el("time", { text: clock() }), " " + text));
  }

  function logChanges(view) {
    const state = view.state;
    if (previous === null) {
      log(`watching: saga ${label(state.status)} (${view.execution})`);
      return;
    }
    const before = previous.state;
    if (before.status !== state.status) log(`saga: ${label(before.status)} → ${label(state.status)}`);
    const old = new Map(before.steps.map((s) => [s.id, s]));
    for (const step of state.steps) {
      const was = old.get(step.id) || { status: "pending", compensation: "none" };
      if (was.status !== step.status) {
        const ext = step.external_id ? ` (${step.external_id})` : "";
        log(`step ${step.id}: ${label(was.status)} → ${label(step.status)}${ext}`);
      }
    }
    for (const step of [...state.steps].reverse()) {  // compensations run last step first
      const was = old.get(step.id) || { compensation: "none" };
      if (was.compensation !== step.compensation && step.compensation !== "registered") {
        log(`step ${step.id} compensation: ${label(was.compensation)} → ${label(step.compensation)}`);
      }
    }
    if (!previous.closed && view.closed && view.outcome) log(`outcome: ${view.outcome}`);
  }

  function planRows(state) {
    if (state.steps.length) return state.steps;
    if (!state.plan) return [];
    return state.plan.steps.map((s) => ({
      id: s.id, action: s.action, args: s.args, status: "pending", external_id: null,
      compensation: "none", compensation_attempts: 0, error: null, compensation_error: null,
      operator_note: null,
    }));
  }

  function argsText(args) {
    return Object.entries(args || {})
      .map(([key, value]) => `${key}: ${typeof value === "string" ? value : JSON.stringify(value)}`)
      .join("\n");
  }

  function evidenceText(evidence) {
    if (!evidence) return null;
    const { attempt, started_at: since, worker, ended, ...rest } = evidence;
    const more = Object.entries(rest).map(([key, value]) => `${key}: ${value}`);
    return [`attempt ${attempt} began at ${since} on ${worker}; ${ended}`, ...more].join(" · ");
  }

  function stepRow(step, index, view) {
    const parked = step.status === "uncertain";
    const notes = [parked ? null : step.error, step.compensation_error,
      step.operator_note && "note: " + step.operator_note,
      parked && "may already have taken effect; not repeated without you", evidenceText(step.evidence)]
      .filter(Boolean).join(" · ");
    const comp = el("td", {}, badge(step.compensation, "c"));
    if (step.compensation_attempts) comp.append(el("small", { text: ` ${step.compensation_attempts} attempts` }));
    const buttons = el("td", { className: "step-actions" });
    if (step.compensation === "failed" && !view.closed) {
      const note = el("input", { type: "text", placeholder: "note", "aria-label": `note for ${step.id}` });
      const retry = el("button", { type: "button", text: "Retry", dataset: { step: step.id } });
      const resolve = el("button", { type: "button", text: "Mark resolved", dataset: { step: step.id } });
      retry.addEventListener("click", () => act("retry", { step_id: step.id }, `retrying the compensation of ${step.id}`));
      resolve.addEventListener("click", () => act("resolve", { step_id: step.id, note: note.value || null },
        `compensation of ${step.id} marked resolved`));
      buttons.append(el("div", { className: "stack" }, el("div", { className: "row" }, retry, resolve), note));
    }
    if (parked && !view.closed) {
      const note = el("input", { type: "text", placeholder: "how you know", "aria-label": `note for ${step.id}` });
      const happened = el("button", { type: "button", text: "It happened", dataset: { step: step.id } });
      const again = el("button", { type: "button", text: "Do it again", dataset: { step: step.id } });
      happened.addEventListener("click", () => act("resolve", { step_id: step.id, note: note.value || null },
        `${step.id} confirmed by you; the saga goes on`));
      again.addEventListener("click", () => act("retry", { step_id: step.id }, `${step.id} runs again`));
      buttons.append(el("div", { className: "stack narrow" }, happened, again, note));
    }
    return el("tr", { "data-step": step.id, "data-status": step.status, "data-compensation": step.compensation },
      el("td", { text: String(index + 1) }),
      el("td", {}, el("strong", { text: step.id })),
      el("td", {}, el("code", { text: step.action })),
      el("td", {}, el("code", { className: "args", text: argsText(step.args) })),
      el("td", {}, badge(step.status)),
      el("td", {}, step.external_id ? el("code", { text: step.external_id }) : el("span", { className: "muted", text: "—" })),
      comp,
      el("td", { className: "notes", text: notes }),
      buttons,
    );
  }

  function render(view) {
    const state = view.state;
    logChanges(view);
    document.title = `${view.saga_id} · ${label(state.status)}`;
    $("#saga-id").textContent = view.saga_id;
    const status = $("#status");
    status.className = `badge s-${state.status}`;
    status.textContent = label(state.status);
    const times = [`started ${when(view.started_at)}`];
    if (view.closed_at) times.push(`closed ${when(view.closed_at)}`);
    times.push(`execution ${label(view.execution)}`);
    $("#times").textContent = times.join(" · ");

    if (view.closed && !$("#message").classList.contains("error")) showMessage("");
    const outcome = $("#outcome");
    outcome.textContent = view.outcome || "";
    outcome.hidden = !view.outcome;
    outcome.className = `outcome o-${state.status}`;

    $("#actions").hidden = !view.can_cancel;
    $("#cancel").hidden = !view.can_cancel;
    $("#approval").hidden = !view.can_approve;
    $("#plan-hash").textContent = state.plan_hash || "";
    $("#approve").dataset.planHash = state.plan_hash || "";

    $("#request").textContent = state.request || "(no request text: the plan was given directly)";
    const by = state.mode === "act" ? "acted by" : "planned by";
    $("#planner").textContent = state.planner ? `${by} ${state.planner}` : "";

    const rows = planRows(state);
    const key = JSON.stringify([rows, view.closed]);
    if (key !== stepsKey) {
      stepsKey = key;
      $("#steps tbody").replaceChildren(...rows.map((s, i) => stepRow(s, i, view)));
    }
    $("#no-plan").hidden = rows.length > 0;
    const problems = $("#problems");
    problems.replaceChildren(...state.problems.map((p) => el("li", { text: p })));
    problems.hidden = state.problems.length === 0;
    const notes = [
      ...(state.turns || []).map((t, i) => `model turn ${i + 1}: ${t}`),
      ...(state.lookups || []).map(
        (l) =>
          `looked up ${l.action} ${JSON.stringify(l.args)}: ` +
          (l.error ? `not answered: ${l.error}` : JSON.stringify(l.result)),
      ),
      ...(state.replans || []).map((r) => `re-planned after step ${r}`),
      ...(state.answer ? [`the agent's answer: ${state.answer}`] : []),
      ...(state.model_calls ? [`model: ${state.model_calls} call(s), ${state.tokens} token(s)`] : []),
    ];
    const planNotes = $("#plan-notes");
    planNotes.replaceChildren(...notes.map((t) => el("li", { text: t })));
    planNotes.hidden = notes.length === 0;
    for (const button of document.querySelectorAll("main button")) button.disabled = busy;
    previous = view;
  }

  async function act(action, body, done) {
    if (busy) return;
    busy = true;
    for (const button of document.querySelectorAll("main button")) button.disabled = true;
    try {
      const { data } = await api(sagaApi(action), "POST", body);
      const view = data.saga || data;
      showMessage(data.message || done);
      log(data.message || done);
      busy = false;
      render(view);
    } catch (err) {
      showMessage(`${action} failed: ${err.message}`, true);
      log(`${action} failed: ${err.message}`);
    } finally {
      busy = false;
      for (const button of document.querySelectorAll("main button")) button.disabled = false;
    }
  }

  async function refreshSaga() {
    let closed = false;
    try {
      const { data } = await api(sagaApi());
      render(data);
      closed = data.closed;
    } catch (err) {
      showMessage(err.message, true);
    }
    if (!closed) setTimeout(refreshSaga, POLL_MS);
  }

  function startSagaPage() {
    $("#cancel").addEventListener("click", () => {
      const question = `Cancel saga ${sagaId}? Steps that already ran are compensated in reverse order.`;
      if (window.confirm(question)) act("cancel", undefined, "cancel requested");
    });
    $("#approve").addEventListener("click", () =>
      act("approve", { plan_hash: $("#approve").dataset.planHash }, "plan approved"));
    $("#reject").addEventListener("click", () =>
      act("reject", { reason: $("#reject-reason").value || null }, "plan rejected"));
    refreshSaga();
  }

  const page = document.body.dataset.page;
  if (page === "list") startList();
  if (page === "saga") startSagaPage();
})();
