/* make demo-web: polls the console's api/state twice a second and renders it. No build step. */
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const csrf = document.querySelector("#csrf input[name=csrfmiddlewaretoken]").value;
  const state = { editing: null, last: null, revisions: {}, deadLetters: null, busy: false, drawn: {} };

  /* Redraw a part only when what it shows changed (keeps focus and hover steady). */
  function changed(part, value) {
    const signature = JSON.stringify(value);
    if (state.drawn[part] === signature) return false;
    state.drawn[part] = signature;
    return true;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function notify(text) {
    $("notice").textContent = text;
  }

  async function post(url, data) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(data || {}),
      credentials: "same-origin",
    });
    let answer = {};
    try { answer = await response.json(); } catch (e) { answer = {}; }
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
    return answer;
  }

  const seconds = (value) => (value === null || value === undefined ? "–" : value < 10 ? `${value.toFixed(1)} s` : `${Math.round(value)} s`);
  const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false }) + "." + String(Math.floor(ms % 1000)).padStart(3, "0");
  const delta = (from, to) => { const d = Math.max(0, to - from); return d < 1000 ? `+${Math.round(d)} ms` : `+${(d / 1000).toFixed(1)} s`; };
  const plural = (n, word) => `${number(n)} ${word}${n === 1 ? "" : "s"}`;
  const number = (n) => (n === null || n === undefined ? "?" : n.toLocaleString("en"));

  /* ---- switches ---- */
  function renderSwitches(s) {
    const running = s.consumer.running;
    $("consumer-dot").className = "dot " + (running ? "on" : "off");
    $("consumer-state").textContent = running ? "running" : "stopped";
    const ct = $("consumer-toggle");
    ct.textContent = running ? "Pause consumer" : "Resume consumer";
    ct.dataset.running = running ? "1" : "0";
    ct.disabled = state.busy;
    const cut = s.broker.cut;
    $("broker-dot").className = "dot " + (cut ? "off" : "on");
    $("broker-state").textContent = cut ? "cut" : "connected";
    $("broker-state").title = cut ? s.broker.how : "";
    const bt = $("broker-toggle");
    bt.textContent = cut ? "Restore broker" : "Cut broker";
    bt.dataset.cut = cut ? "1" : "0";
    bt.disabled = state.busy;
  }

  /* ---- tables ---- */
  const SYNC_WORDS = { in_sync: "in sync", behind: "behind", missing: "not yet copied", deleting: "deletion pending", differs: "differs" };

  function keepFocus(render) {
    const active = document.activeElement;
    const key = active && active.dataset ? active.dataset.focusKey : null;
    render();
    if (key) {
      const again = document.querySelector(`[data-focus-key="${key}"]`);
      if (again) again.focus();
    }
  }

  function renderMaster(s) {
    const body = $("master-table").tBodies[0];
    if (changed("master", [s.rows.map((r) => [r.id, r.master]), state.editing])) keepFocus(() => {
      body.replaceChildren(...s.rows.map((row) => {
        const m = row.master;
        if (!m) {
          return el("tr", { "data-id": row.id, class: "absent" },
            el("td", { class: "c-id", text: row.id }),
            el("td", { class: "c-name", colspan: 4, text: "deleted" }),
            el("td", { class: "c-actions" }));
        }
        return el("tr", { "data-id": row.id, class: state.editing === row.id ? "editing" : null },
          el("td", { class: "c-id", text: row.id }),
          el("td", { class: "c-name", text: m.name, title: m.sku }),
          el("td", { class: "c-price", text: m.price }),
          el("td", { class: "c-stock" }, el("span", { class: "pill " + (m.in_stock ? "yes" : "no"), text: m.in_stock ? "yes" : "no" })),
          el("td", { class: "c-revision", text: m.revision }),
          el("td", { class: "c-actions" },
            el("button", { type: "button", class: "btn small", "data-focus-key": `edit-${row.id}`, "aria-label": `Edit product ${row.id}, ${m.name}`, onclick: () => startEdit(row.id, m), text: "Edit" }),
            el("button", { type: "button", class: "btn small danger", "data-focus-key": `delete-${row.id}`, "aria-label": `Delete product ${row.id}, ${m.name}`, onclick: () => remove(row.id, m.name), text: "Delete" })));
      }));
    });
    const more = s.master.count - s.rows.filter((r) => r.master).length;
    $("master-count").textContent = `${number(s.master.count)} products` + (more > 0 ? ` · ${number(more)} more not shown` : "");
  }

  function renderReplica(s) {
    const body = $("replica-table").tBodies[0];
    const flashes = [];
    if (changed("replica", s.rows.map((r) => [r.id, r.replica, r.sync]))) body.replaceChildren(...s.rows.map((row) => {
      const r = row.replica;
      const pill = el("span", { class: "pill " + row.sync, text: SYNC_WORDS[row.sync] || row.sync });
      if (!r) {
        return el("tr", { "data-id": row.id, "data-sync": row.sync, class: "absent" },
          el("td", { class: "c-id", text: row.id }),
          el("td", { class: "c-name", colspan: 4, text: "not on the replica" }),
          el("td", { class: "c-state" }, pill));
      }
      const previous = state.revisions[row.id];
      if (previous !== undefined && previous !== r.revision) flashes.push(row.id);
      state.revisions[row.id] = r.revision;
      return el("tr", { "data-id": row.id, "data-sync": row.sync, "data-revision": r.revision, class: flashes.includes(row.id) ? "flash" : null },
        el("td", { class: "c-id", text: row.id }),
        el("td", { class: "c-name", text: r.name, title: r.sku }),
        el("td", { class: "c-price", text: r.price }),
        el("td", { class: "c-stock" }, el("span", { class: "pill " + (r.in_stock ? "yes" : "no"), text: r.in_stock ? "yes" : "no" })),
        el("td", { class: "c-revision", text: r.revision }),
        el("td", { class: "c-state" }, pill));
    }));
    $("replica-count").textContent = s.replica.ok ? `${number(s.replica.count)} copies` : "–";
    const c = s.counts;
    const out = c.behind + c.missing + c.deleting + c.differs;
    const summary = $("sync-summary");
    summary.textContent = out === 0
      ? `All ${number(c.in_sync)} rows in sync with the master.`
      : `${number(c.in_sync)} in sync · ${number(c.behind)} behind · ${number(c.missing)} not yet copied · ${number(c.deleting)} deletions pending`;
    summary.dataset.outOfSync = String(out);
  }

  /* ---- event flow ---- */
  function renderFlow(s) {
    const list = $("flow");
    if (!changed("flow", s.events)) return;
    if (!s.events.length) {
      list.replaceChildren(el("li", { class: "empty", text: "No events yet: change a product on the master." }));
      return;
    }
    list.replaceChildren(...s.events.map((e) => {
      const failed = e.stage === "dead";
      const appliedLabel = e.stage === "dead" ? "dead-lettered" : e.stage === "ignored" ? "ignored" : "applied";
      const steps = el("span", { class: "steps" },
        el("span", { class: "step done", title: "committed with its change (outbox row)" }, `committed ${clock(e.committed)}`),
        el("span", { class: "arrow", "aria-hidden": "true", text: "→" }),
        e.published !== null
          ? el("span", { class: "step done" }, `published ${delta(e.committed, e.published)}`)
          : el("span", { class: "step " + (e.attempts ? "wait" : "") }, e.attempts ? "publish failed" : "publishing"),
        el("span", { class: "arrow", "aria-hidden": "true", text: "→" }),
        e.applied !== null
          ? el("span", { class: "step " + (failed ? "fail" : "done") }, `${appliedLabel} ${delta(e.committed, e.applied)}`)
          : el("span", { class: "step" + (e.published !== null ? " wait" : "") }, "applying"));
      return el("li", { "data-stage": e.stage, "data-pk": e.pk, "data-revision": e.revision },
        el("span", { class: "eid", text: `#${e.id}` }),
        el("span", { class: "what" }, el("strong", { text: `${e.signal} product ${e.pk}` }), ` rev ${e.revision}`),
        steps,
        e.stage === "applied" ? null : el("span", { class: "state" }, el("span", { class: "pill " + e.stage, text: e.words }),
          e.last_error && e.published === null ? ` ${e.last_error}` : ""));
    }));
  }

  /* ---- health ---- */
  function renderHealth(s) {
    const h = s.health;
    $("m-pending").textContent = h.outbox_pending === null ? "–" : number(h.outbox_pending);
    $("m-oldest").textContent = seconds(h.outbox_oldest);
    $("m-failed").textContent = number(h.outbox_failed);
    $("m-failed").classList.toggle("alert", h.outbox_failed > 0);
    $("m-ready").textContent = h.queue_ready === null || h.queue_ready === undefined ? "–" : number(h.queue_ready);
    $("m-lag").textContent = s.lag === null ? "–" : s.lag === 0 ? "0 s" : seconds(s.lag);
    $("m-dead").textContent = h.dead_letters === null || h.dead_letters === undefined ? "–" : number(h.dead_letters);
    $("m-dead").classList.toggle("alert", h.dead_letters > 0);
    const error = $("m-error");
    const problems = [...h.unreachable];
    if (h.outbox_last_error) problems.push(`last publish error: ${h.outbox_last_error}`);
    error.hidden = problems.length === 0;
    error.textContent = problems.join(" · ");
    if (h.dead_letters !== state.deadLetters) {
      state.deadLetters = h.dead_letters;
      loadLetters();
    }
  }

  async function loadLetters() {
    const list = $("letters");
    try {
      const response = await fetch("api/dead-letters");
      const data = await response.json();
      if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
      if (!data.letters.length) {
        list.replaceChildren(el("li", { class: "empty", text: "No dead letters." }));
        return;
      }
      list.replaceChildren(...data.letters.map((l) => el("li", { "data-reason": l.reason },
        el("span", { class: "reason", text: l.reason }), ` · ${l.cqrs_id || "?"} ${l.pk ?? ""}`,
        l.error ? el("span", { class: "detail", text: l.error }) : null,
        el("span", { class: "detail", text: l.body }))));
    } catch (error) {
      list.replaceChildren(el("li", { class: "empty", text: `Cannot read the dead letters: ${error.message}` }));
    }
  }

  /* ---- polling ---- */
  async function poll() {
    try {
      const response = await fetch("api/state", { cache: "no-store" });
      const s = await response.json();
      state.last = s;
      const problems = [s.master.ok ? "" : s.master.error, s.replica.ok ? "" : s.replica.error].filter(Boolean);
      $("down").hidden = problems.length === 0;
      $("down").textContent = problems.join(" · ");
      renderSwitches(s);
      renderMaster(s);
      renderReplica(s);
      renderFlow(s);
      renderHealth(s);
      document.body.dataset.ready = "1";
    } catch (error) {
      $("down").hidden = false;
      $("down").textContent = `The demo does not answer (${error.message}); is make demo-web still running?`;
    }
    setTimeout(poll, 500);
  }

  /* ---- the form ---- */
  const form = $("product-form");
  function resetForm() {
    state.editing = null;
    form.reset();
    form.classList.remove("editing");
    $("form-title").textContent = "New product";
    $("f-submit").textContent = "Add product";
    $("f-cancel").hidden = true;
    $("form-error").textContent = "";
    for (const input of form.querySelectorAll("input")) input.removeAttribute("aria-invalid");
  }
  function startEdit(id, m) {
    state.editing = id;
    form.classList.add("editing");
    $("form-title").textContent = `Edit product ${id} (${m.sku})`;
    $("f-name").value = m.name;
    $("f-price").value = m.price;
    $("f-stock").checked = m.in_stock;
    $("f-submit").textContent = "Save changes";
    $("f-cancel").hidden = false;
    $("form-error").textContent = "";
    $("f-name").focus();
    $("f-name").select();
  }
  $("f-cancel").addEventListener("click", resetForm);
  form.addEventListener("keydown", (event) => { if (event.key === "Escape" && state.editing !== null) resetForm(); });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = { name: $("f-name").value, price: $("f-price").value, in_stock: $("f-stock").checked };
    const editing = state.editing;
    $("f-submit").disabled = true;
    try {
      const answer = await post(editing === null ? "api/products" : `api/products/${editing}`, data);
      notify(editing === null
        ? `Product ${answer.id} created on the master: watch it reach the replica.`
        : `Product ${answer.id} saved on the master (revision ${answer.revision}): watch the replica.`);
      resetForm();
    } catch (error) {
      $("form-error").textContent = error.message;
      const field = /^Price/.test(error.message) ? "f-price" : /^Name/.test(error.message) ? "f-name" : null;
      if (field) { $(field).setAttribute("aria-invalid", "true"); $(field).focus(); }
    } finally {
      $("f-submit").disabled = false;
    }
  });

  async function remove(id, name) {
    try {
      await post(`api/products/${id}/delete`);
      notify(`Product ${id} (${name}) deleted on the master.`);
      if (state.editing === id) resetForm();
    } catch (error) {
      notify(`Could not delete product ${id}: ${error.message}`);
    }
  }

  async function action(button, url, data, done) {
    button.disabled = true;
    try {
      notify(done(await post(url, data)));
    } catch (error) {
      notify(`Failed: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  }

  for (const button of document.querySelectorAll("[data-bulk]")) {
    button.addEventListener("click", () => {
      notify("Working…");
      action(button, "api/bulk", { action: button.dataset.bulk }, (a) =>
        button.dataset.bulk === "create" ? `Added ${number(a.changed)} products in one bulk_create.` : `Raised ${number(a.changed)} prices in one bulk_update.`);
    });
  }

  async function toggle(button, url, data, words) {
    state.busy = true;
    button.disabled = true;
    notify(words[0]);
    try {
      await post(url, data);
      notify(words[1]);
    } catch (error) {
      notify(`Failed: ${error.message}`);
    } finally {
      state.busy = false;
      button.disabled = false;
    }
  }
  $("consumer-toggle").addEventListener("click", (event) => {
    const running = event.currentTarget.dataset.running === "1";
    toggle(event.currentTarget, "api/consumer", { running: !running }, running
      ? ["Stopping the consumer…", "Consumer stopped: changes wait in the broker's queue."]
      : ["Starting the consumer…", "Consumer started: the queue drains."]);
  });
  $("broker-toggle").addEventListener("click", (event) => {
    const cut = event.currentTarget.dataset.cut === "1";
    toggle(event.currentTarget, "api/broker", { cut: !cut }, cut
      ? ["Restoring the broker…", "Broker restored: the outbox is published."]
      : ["Cutting the broker…", "Broker cut: changes stay in the master's outbox."]);
  });

  $("dl-send").addEventListener("click", (event) => action(event.currentTarget, "api/dead-letters/send", {}, (a) =>
    `Sent product ${a.pk} without its required fields: the consumer will dead-letter it.`));
  $("dl-retry").addEventListener("click", (event) => action(event.currentTarget, "api/dead-letters/retry", {}, (a) => {
    state.deadLetters = null;
    return `Replayed ${plural(a.retried, "dead letter")} to the replica's queue` + (a.malformed ? ` (${a.malformed} unreadable, kept)` : "") + ".";
  }));
  $("dl-purge").addEventListener("click", (event) => action(event.currentTarget, "api/dead-letters/purge", {}, (a) => {
    state.deadLetters = null;
    return `Discarded ${plural(a.purged, "dead letter")}.`;
  }));

  poll();
})();
