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
      const error = new Error(typeof detail === "string" ? detail : (detail ? JSON.stringify(detail) : res.statusText));
      error.status = res.status;
      throw error;
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

  // Who is signed in, and what their role lets them do (buttons follow it).
  let me = null;
  const may = (permission) => Boolean(me && me.permissions.includes(permission));
  async function loadMe() {
    try {
      me = (await api("/api/me")).data;
      const who = $("#me");
      if (who) who.textContent = `${me.name} · ${me.role}`;
    } catch (_) {
      me = null;
    }
  }

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
  const WAIT = "saga.wait";
  const NOTHING = "nothing to undo";
  let previous = null;
  let stepsKey = "";
  let busy = false;
  let keepMessage = false;  // the answer to a cancel stays until the person acts again
  let pollFailed = false;  // the message shows a failed poll: the next good one clears it
  const whenCells = new Map();  // step id -> [cell, step]: the times, redrawn every poll

  // The engine's states in plain words (the data-* attributes keep the engine's own).
  const STEP_WORDS = { pending: "not started", succeeded: "done" };
  const UNDO_WORDS = {
    none: "—", registered: "can be undone", running: "being undone", compensated: "undone",
    failed: "undo failed", resolved: "resolved by hand",
  };
  const stepWord = (status) => STEP_WORDS[status] || label(status);
  // An execution status in the saga's spelling: Temporal writes "canceled".
  const executionWord = (execution) => (execution === "canceled" ? "cancelled" : label(execution));

  // "payments.charge" -> "charged": what a step did, for "charged, then refunded".
  const IRREGULAR = { send: "sent", pay: "paid", hold: "held", make: "made", buy: "bought",
    put: "put", set: "set", ship: "shipped", stop: "stopped", cancel: "cancelled" };
  function did(action) {
    const verb = (action.split(".").pop() || "").split("_")[0].toLowerCase();
    if (!/^[a-z]+$/.test(verb)) return "done";
    if (IRREGULAR[verb]) return IRREGULAR[verb];
    if (verb.endsWith("e")) return verb + "d";
    if (/[^aeiou]y$/.test(verb)) return verb.slice(0, -1) + "ied";
    return verb + "ed";
  }

  // What a compensation's result says it did, in its own words: a field `action`,
  // `outcome` or `status` ("refunded", "already_closed"), else its true flag ("released").
  function undoWord(result) {
    if (!result) return null;
    for (const key of ["action", "outcome", "status"]) {
      const value = result[key];
      if (typeof value !== "string" || !value) continue;
      if (["nothing_to_undo", "not_found"].includes(value)) return NOTHING;
      return label(value.replace(/^already_/, ""));
    }
    const flags = Object.entries(result).filter(([, value]) => typeof value === "boolean");
    if (!flags.length) return null;
    const done = flags.find(([, value]) => value);
    return done ? label(done[0]) : NOTHING;
  }

  // The undo's own id: its `external_id` (as a step's result names its effect), else the
  // first other `..._id` it gives (a refund id).
  function undoId(result) {
    if (!result) return null;
    if (result.external_id) return String(result.external_id);
    const found = Object.entries(result).find(([key, value]) => key.endsWith("_id") && value);
    return found ? String(found[1]) : null;
  }

  function shownStatus(step) {
    if (step.status === "succeeded" && step.compensation === "compensated") {
      const word = undoWord(step.compensation_result);
      const text = word === NOTHING ? `${did(step.action)}; ${NOTHING}` : `${did(step.action)}, then ${word || "undone"}`;
      return { text, className: "badge s-undone" };
    }
    if (step.status === "succeeded" && step.compensation === "resolved") {
      return { text: `${did(step.action)}, then undone by hand`, className: "badge s-undone" };
    }
    return { text: stepWord(step.status), className: `badge s-${step.status}` };
  }

  function undoText(step, view) {
    // A completed saga keeps its steps: "can be undone" no longer applies.
    if (step.compensation === "registered" && view && view.closed && view.state.status === "completed") return "kept";
    if (step.compensation !== "compensated") return UNDO_WORDS[step.compensation] || label(step.compensation);
    return undoWord(step.compensation_result) || "undone";
  }

  // -- times ----------------------------------------------------------------------------
  function at(iso) {
    const date = new Date(iso);
    return date.toDateString() === new Date().toDateString() ? date.toLocaleTimeString() : date.toLocaleString();
  }

  function span(ms) {
    if (ms < 1000) return "under 1 s";
    const s = Math.round(ms / 1000);
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
    const h = Math.floor(m / 60);
    if (h < 24) return `${h} h ${m % 60} min`;
    return `${Math.floor(h / 24)} d ${h % 24} h`;
  }

  function waitEnds(step) {
    const seconds = Number(step.args && step.args.seconds);
    if (step.action !== WAIT || !step.started_at || !Number.isFinite(seconds)) return null;
    return new Date(new Date(step.started_at).getTime() + seconds * 1000);
  }

  function stepTimes(step, now) {
    if (!step.started_at) return "";
    const start = new Date(step.started_at);
    const parts = [`started ${at(step.started_at)}`];
    const ends = waitEnds(step);
    if (step.ended_at) {
      const took = span(new Date(step.ended_at) - start);
      parts.push(`${step.status === "cancelled" ? "cancelled" : "ended"} ${at(step.ended_at)} (${took})`);
    } else if (ends && step.status === "running") {
      parts.push(`ends ${at(ends.toISOString())}: ${span(ends - now)} left`);
    } else if (step.status === "running") {
      parts.push(`running for ${span(now - start)}`);
    }
    return parts.join("\n");
  }

  function sagaTimes(view, now) {
    const parts = [];
    if (view.started_at) parts.push(`started ${at(view.started_at)}`);
    if (view.closed_at) {
      parts.push(`ended ${at(view.closed_at)}`);
      if (view.started_at) parts.push(`took ${span(new Date(view.closed_at) - new Date(view.started_at))}`);
    } else if (view.started_at) {
      parts[0] += ` (${span(now - new Date(view.started_at))} ago)`;
    }
    if (!["running", "completed", "canceled"].includes(view.execution)) {
      parts.push(`workflow ${executionWord(view.execution)}`);
    }
    return parts.join(" · ");
  }

  function approvalDeadline(state, now) {
    if (!state.approval_deadline) return "";
    const deadline = new Date(state.approval_deadline);
    return `Unanswered, the plan is rejected at ${at(state.approval_deadline)} (${span(deadline - now)} from now).`;
  }

  function redrawTimes(view) {
    const now = new Date();
    $("#times").textContent = sagaTimes(view, now);
    $("#approval-deadline").textContent = view.can_approve ? approvalDeadline(view.state, now) : "";
    for (const [cell, step] of whenCells.values()) cell.textContent = stepTimes(step, now);
  }

  // -- messages and the log -------------------------------------------------------------
  function log(text) {
    $("#log").append(el("li", {}, el("time", { text: clock() }), " " + text));
  }

  function logChanges(view) {
    const state = view.state;
    if (previous === null) {
      log(`watching: saga ${label(state.status)}`);
      return;
    }
    const before = previous.state;
    if (before.status !== state.status) log(`saga: ${label(before.status)} → ${label(state.status)}`);
    const old = new Map(before.steps.map((s) => [s.id, s]));
    for (const step of state.steps) {
      const was = old.get(step.id) || { status: "pending", compensation: "none" };
      if (was.status !== step.status) {
        const ext = step.external_id ? ` (${step.external_id})` : "";
        log(`step ${step.id}: ${stepWord(was.status)} → ${stepWord(step.status)}${ext}`);
      }
    }
    for (const step of [...state.steps].reverse()) {  // undone last step first
      const was = old.get(step.id) || { compensation: "none" };
      if (was.compensation !== step.compensation && step.compensation !== "registered") {
        const id = undoId(step.compensation_result);
        log(`step ${step.id}: ${undoText(step)}${id ? ` (${id})` : ""}`);
      }
    }
    if (!previous.closed && view.closed && view.outcome) log(`outcome: ${view.outcome}`);
  }

  // -- the steps ------------------------------------------------------------------------
  function planRows(state) {
    if (state.steps.length) return state.steps;
    if (!state.plan) return [];
    return state.plan.steps.map((s) => ({
      id: s.id, action: s.action, args: s.args, status: "pending", external_id: null,
      compensation: "none", compensation_attempts: 0, error: null, compensation_error: null,
      operator_note: null, started_at: null, ended_at: null, compensation_result: null,
      compensated_at: null,
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
    const began = since && !Number.isNaN(Date.parse(since)) ? at(since) : since;
    return [`attempt ${attempt} began at ${began} on ${worker}; ${ended}`, ...more].join(" · ");
  }

  // Notes: errors in red; what is only information (a cancelled wait) is not.
  function notesCell(step) {
    const parked = step.status === "uncertain";
    const notes = [];
    if (step.status === "cancelled") {
      const ends = waitEnds(step);
      if (ends && step.ended_at) {
        const waited = span(new Date(step.ended_at) - new Date(step.started_at));
        notes.push([`waited ${waited} of ${span(ends - new Date(step.started_at))}, then the saga was cancelled`, "info"]);
      } else if (step.error && step.error !== "cancelled") {
        notes.push([step.error, "info"]);
      }
    } else if (!parked && step.error) {
      notes.push([step.error, step.status === "failed" ? "error" : "info"]);
    }
    if (step.compensation_error) notes.push([`undo: ${step.compensation_error}`, "error"]);
    if (step.operator_note) notes.push([`note: ${step.operator_note}`, "info"]);
    if (parked) notes.push(["may already have taken effect; not repeated without you", "error"]);
    const evidence = evidenceText(step.evidence);
    if (evidence) notes.push([evidence, "info"]);
    return el("td", { className: "notes" }, ...notes.map(([text, kind]) => el("span", { className: kind, text })));
  }

  // An operator's buttons sit with what they decide on: a failed undo in the undo cell,
  // a step parked as uncertain under its status.
  function undoButtons(step) {
    const note = el("input", { type: "text", placeholder: "note", "aria-label": `note for ${step.id}` });
    const retry = el("button", { type: "button", text: "Retry", dataset: { step: step.id } });
    const resolve = el("button", { type: "button", text: "Mark resolved", dataset: { step: step.id } });
    retry.addEventListener("click", () => act("retry", { step_id: step.id }, `retrying the undo of ${step.id}`));
    resolve.addEventListener("click", () => act("resolve", { step_id: step.id, note: note.value || null },
      `undo of ${step.id} marked resolved`));
    if (!may("retry") && !may("resolve")) return null;
    return el("div", { className: "step-actions" },
      el("div", { className: "row" }, may("retry") ? retry : null, may("resolve") ? resolve : null),
      may("resolve") ? note : null);
  }

  function parkedButtons(step) {
    const note = el("input", { type: "text", placeholder: "how you know", "aria-label": `note for ${step.id}` });
    const happened = el("button", { type: "button", text: "It happened", dataset: { step: step.id } });
    const again = el("button", { type: "button", text: "Do it again", dataset: { step: step.id } });
    happened.addEventListener("click", () => act("resolve", { step_id: step.id, note: note.value || null },
      `${step.id} confirmed by you; the saga goes on`));
    again.addEventListener("click", () => act("retry", { step_id: step.id }, `${step.id} runs again`));
    if (!may("retry") && !may("resolve")) return null;
    return el("div", { className: "step-actions" },
      el("div", { className: "row" }, may("resolve") ? happened : null, may("retry") ? again : null),
      may("resolve") ? note : null);
  }

  function undoCell(step, view) {
    if (step.compensation === "none") return el("td", { className: "undo" }, el("span", { className: "muted", text: "—" }));
    const cell = el("td", { className: "undo" }, el("span", { className: `badge c-${step.compensation}`, text: undoText(step, view) }));
    const id = undoId(step.compensation_result);
    if (id) cell.append(" ", el("code", { text: id }));
    if (step.compensation_attempts) cell.append(el("small", { text: ` ${step.compensation_attempts} attempts` }));
    if (step.compensated_at) cell.append(el("div", { className: "when", text: `at ${at(step.compensated_at)}` }));
    if (step.compensation === "failed" && !view.closed) cell.append(undoButtons(step));
    return cell;
  }

  function stepRow(step, index, view) {
    const shown = shownStatus(step);
    const when = el("div", { className: "when" });
    whenCells.set(step.id, [when, step]);
    const status = el("td", { className: "status" }, el("span", { className: shown.className, text: shown.text }), when);
    if (step.status === "uncertain" && !view.closed) status.append(parkedButtons(step));
    return el("tr", { "data-step": step.id, "data-status": step.status, "data-compensation": step.compensation },
      el("td", { text: String(index + 1) }),
      el("td", { className: "step" }, el("strong", { text: step.id })),
      el("td", { className: "action" }, el("code", { text: step.action })),
      el("td", { className: "args" }, el("code", { className: "args", text: argsText(step.args) })),
      status,
      el("td", { className: "ext" }, step.external_id ? el("code", { text: step.external_id }) : el("span", { className: "muted", text: "—" })),
      undoCell(step, view),
      notesCell(step),
    );
  }

  // -- the page -------------------------------------------------------------------------
  function render(view) {
    const state = view.state;
    logChanges(view);
    document.title = `${view.saga_id} · ${label(state.status)}`;
    $("#saga-id").textContent = view.saga_id;
    const status = $("#status");
    status.className = `badge s-${state.status}`;
    status.textContent = label(state.status);
    const amount = money(state.amount, state.currency);
    $("#summary").textContent = [state.summary, amount].filter(Boolean).join(" · ");
    $("#summary").hidden = !state.summary && !amount;

    if (view.closed && !keepMessage && !$("#message").classList.contains("error")) showMessage("");
    const outcome = $("#outcome");
    outcome.textContent = view.outcome || "";
    outcome.hidden = !view.outcome;
    outcome.className = `outcome o-${state.status}`;

    const waiting = state.status === "awaiting_approval";
    $("#actions").hidden = !view.can_cancel || !may("cancel");
    $("#cancel").hidden = !view.can_cancel || !may("cancel");
    $("#cancel-help").textContent = waiting
      ? "Cancel saga stops it without a decision on the plan: nothing has run yet, so nothing is undone. To refuse this plan, use Reject plan above."
      : "Cancel saga stops it: the steps that already ran are undone, last one first.";
    $("#approval").hidden = !view.can_approve || !may("approve");
    $("#plan-hash").textContent = state.plan_hash || "";
    $("#approve").dataset.planHash = state.plan_hash || "";

    $("#request").textContent = state.request || "(no request text: the plan was given directly)";
    const by = state.mode === "act" ? "acted by" : "planned by";
    $("#planner").textContent = state.planner ? `${by} ${state.planner}` : "";

    const rows = planRows(state);
    const key = JSON.stringify([rows, view.closed]);
    if (key !== stepsKey) {
      stepsKey = key;
      whenCells.clear();
      $("#steps tbody").replaceChildren(...rows.map((s, i) => stepRow(s, i, view)));
    }
    redrawTimes(view);
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
      // A cancel's final answer (done, or nothing to cancel) stays in view; "cancel
      // requested" gives way to the outcome once the saga closes.
      keepMessage = action === "cancel" && data.cancelled !== null && data.cancelled !== undefined;
      pollFailed = false;
      showMessage(data.message || done);
      $("#message").classList.toggle("notice", data.cancelled === false);
      log(data.message || done);
      busy = false;
      render(view);
    } catch (err) {
      keepMessage = false;
      $("#message").classList.remove("notice");
      showMessage(`${action} failed: ${err.message}`, true);
      log(`${action} failed: ${err.message}`);
    } finally {
      refreshDecisions();
      busy = false;
      for (const button of document.querySelectorAll("main button")) button.disabled = false;
    }
  }

  function showNotFound() {
    document.title = "Saga not found";
    $("#saga").hidden = true;
    $("#not-found-id").textContent = sagaId;
    $("#not-found").hidden = false;
  }

  // Who decided what about this saga (the audit trail), oldest first.
  async function refreshDecisions() {
    try {
      const { data } = await api(sagaApi("audit"));
      const items = data.map((d) => el("li", { dataset: { action: d.action } },
        el("time", { text: at(d.at) }),
        ` ${d.who} (${d.via}): ${d.action}${d.step_id ? " step " + d.step_id : ""} → ${d.outcome}${d.detail ? " (" + d.detail + ")" : ""}`));
      $("#decisions").replaceChildren(...items);
      $("#decisions-none").hidden = items.length > 0;
    } catch (_) {
      // The trail is not readable here (no ledger for the web app): the page goes on.
    }
  }

  async function refreshSaga() {
    let again = true;
    try {
      const { data } = await api(sagaApi());
      if (pollFailed) showMessage("");
      pollFailed = false;
      render(data);
      refreshDecisions();
      again = !data.closed;
    } catch (err) {
      if (err.status === 404) {
        showNotFound();
        again = false;
      } else {
        pollFailed = true;
        showMessage(err.message, true);
      }
    }
    if (again) setTimeout(refreshSaga, POLL_MS);
    document.body.dataset.polling = again ? "on" : "off";
  }

  function startSagaPage() {
    $("#cancel").addEventListener("click", () => {
      const waiting = previous && previous.state.status === "awaiting_approval";
      const question = waiting
        ? `Cancel saga ${sagaId}? Nothing has run yet; the plan is not run.`
        : `Cancel saga ${sagaId}? Steps that already ran are undone, last one first.`;
      if (window.confirm(question)) act("cancel", undefined, "cancel requested");
    });
    $("#approve").addEventListener("click", () =>
      act("approve", { plan_hash: $("#approve").dataset.planHash }, "plan approved"));
    $("#reject").addEventListener("click", () =>
      act("reject", { reason: $("#reject-reason").value || null }, "plan rejected"));
    document.body.dataset.polling = "on";
    refreshSaga();
  }

  const page = document.body.dataset.page;
  loadMe().then(() => {
    if (page === "list") startList();
    if (page === "saga") startSagaPage();
  });
})();
