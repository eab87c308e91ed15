// Nimbus console: progressive enhancement only. Every page reads without this file.
"use strict";

// Buttons asking for confirmation (data-confirm) before their form is sent.
document.addEventListener("submit", (event) => {
  const button = event.submitter;
  const message = button && button.dataset ? button.dataset.confirm : null;
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});

// The live events feed: server-sent events into the table, newest on top. Text only (never
// HTML), so an event's repository or tag cannot become markup.
function startFeed(table) {
  const body = table.tBodies[0];
  const state = document.getElementById("feed-state");
  const source = new EventSource(table.dataset.stream);
  const say = (text) => { if (state) { state.textContent = text; } };
  say("Connecting…");
  source.onopen = () => say("Live: new events appear at the top.");
  source.onerror = () => say("Disconnected; reconnecting…");
  source.addEventListener("failure", (event) => say("The notifier stream failed: " + event.data));
  const seen = new Set(Array.from(body.rows, (row) => row.dataset.id).filter(Boolean));
  source.addEventListener("registry", (event) => {
    const e = JSON.parse(event.data);
    if (seen.has(e.id)) { return; }
    seen.add(e.id);
    for (const row of body.querySelectorAll("tr.empty")) { row.remove(); }
    const target = e.target || {};
    const cells = [
      e.timestamp || "",
      e.action || "",
      target.repository || "",
      target.tag || "",
      (target.digest || "").slice(0, 19),
      (e.actor || {}).name || "",
      (e.source || {}).site || "",
    ];
    const row = document.createElement("tr");
    row.className = "fresh";
    row.dataset.id = e.id || "";
    for (const value of cells) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.appendChild(cell);
    }
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > 500) {
      body.deleteRow(body.rows.length - 1);
    }
  });
}

const feed = document.getElementById("feed");
if (feed && window.EventSource) {
  startFeed(feed);
}

// The live backlog: each peer's cells (data-field) updated from the status stream.
function startStatus(table) {
  const state = document.getElementById("status-state");
  const say = (text) => { if (state) { state.textContent = text; } };
  const source = new EventSource(table.dataset.stream);
  source.onopen = () => say("Live: the figures follow the replicator.");
  source.onerror = () => say("Disconnected; reconnecting…");
  source.addEventListener("failure", (event) => say("The replicator's status failed: " + event.data));
  source.addEventListener("status", (event) => {
    const data = JSON.parse(event.data);
    for (const peer of data.peers || []) {
      for (const row of table.tBodies[0].rows) {
        if (row.dataset.peer !== peer.peer) { continue; }
        for (const cell of row.querySelectorAll("[data-field]")) {
          const value = peer[cell.dataset.field];
          if (value !== undefined && cell.textContent !== String(value)) {
            cell.textContent = String(value);
          }
        }
      }
    }
    say("Live: updated " + new Date().toLocaleTimeString() + ".");
  });
}

const peersTable = document.getElementById("peers");
if (peersTable && peersTable.dataset.stream && window.EventSource) {
  startStatus(peersTable);
}

// Server-sent events read from a POST's answer (EventSource only GETs): calls onEvent(name,
// data) for each event, and resolves when the stream ends.
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) { break; }
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) { name = line.slice(7); }
        else if (line.startsWith("data: ")) { data.push(line.slice(6)); }
      }
      if (data.length) { onEvent(name, JSON.parse(data.join("\n"))); }
    }
  }
}

// How each live panel draws its progress, by the panel's id.
const progressOf = {
  "sync-live": (panel, form, name, data) => {
    const bar = panel.querySelector(".live-bar");
    const text = panel.querySelector(".live-text");
    if (name === "failure") { text.textContent = "The sync failed: " + data; return; }
    bar.max = Math.max(data.total, 1);
    bar.value = data.finished ? bar.max : data.done;
    bar.textContent = data.done + " of " + data.total;
    panel.querySelector(".live-count").textContent = data.done + " of " + data.total + " tags";
    if (data.error) {
      const item = document.createElement("li");
      item.textContent = data.repository + ":" + data.reference + ": " + data.error;
      panel.querySelector(".live-errors").appendChild(item);
    }
    text.textContent = data.finished
      ? "Done: " + data.images_copied + " images copied (" + data.copied + "), " + data.failed + " failed."
      : (data.phase === "listing" ? "Listing what the peer needs…" : "Copying " + data.repository + ":" + data.reference + "…");
    if (data.finished) { panel.dataset.state = "done"; }
  },
  "gc-live": (panel, form, name, data) => {
    const bar = panel.querySelector(".live-bar");
    const text = panel.querySelector(".live-text");
    if (name === "failure") { text.textContent = "The collection failed: " + data; return; }
    bar.value = data.phase;
    bar.textContent = data.phase_name;
    panel.querySelector(".live-count").textContent = data.phase_name;
    if (data.item) {
      const row = document.createElement("tr");
      for (const value of [data.item.kind, data.item.name, data.item.size]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.appendChild(cell);
      }
      row.lastChild.className = "num";
      panel.querySelector(".live-errors").appendChild(row);
    }
    const totals = data.blobs_deleted + " blobs, " + data.manifests_deleted + " manifests, " +
      data.uploads_deleted + " uploads";
    text.textContent = data.done
      ? (data.dry_run ? "Dry run done: would free " : "Done: freed ") + data.freed + " (" + totals + ")."
      : data.message;
    if (data.done) {
      panel.dataset.state = "done";
      for (const b of form.querySelectorAll("[data-after-dry-run]")) { b.hidden = !data.dry_run; }
    }
  },
  "retention-live": (panel, form, name, data) => {
    const bar = panel.querySelector(".live-bar");
    const text = panel.querySelector(".live-text");
    if (name === "failure") { text.textContent = "The retention run failed: " + data; return; }
    bar.value = data.phase;
    bar.textContent = data.phase_name;
    panel.querySelector(".live-count").textContent = data.phase_name;
    if (data.item) {
      const row = document.createElement("tr");
      for (const value of [data.item.kind, data.item.name, data.item.size, data.item.rule]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.appendChild(cell);
      }
      row.children[2].className = "num";
      panel.querySelector(".live-errors").appendChild(row);
    }
    const totals = data.tags_deleted + " tags, " + data.manifests_deleted + " manifests";
    text.textContent = data.done
      ? (data.dry_run ? "Dry run done: would delete " : "Done: deleted ") + totals + " (" +
        data.freed + " once garbage collection runs)" +
        (data.skipped ? "; " + data.skipped + " changed meanwhile and were left alone." : ".")
      : data.message;
    if (data.done) {
      panel.dataset.state = "done";
      for (const b of form.querySelectorAll("[data-after-dry-run]")) { b.hidden = !data.dry_run; }
    }
  },
};

// Forms with data-live="<panel id>": sent with fetch, their progress drawn in the panel.
document.addEventListener("submit", async (event) => {
  const form = event.target;
  const panelId = form.dataset ? form.dataset.live : null;
  const draw = panelId ? progressOf[panelId] : null;
  const panel = panelId ? document.getElementById(panelId) : null;
  if (!draw || !panel || !window.fetch || !window.TextDecoder || event.defaultPrevented) { return; }
  event.preventDefault();
  const body = new URLSearchParams(new FormData(form));
  if (event.submitter && event.submitter.name) { body.set(event.submitter.name, event.submitter.value); }
  panel.hidden = false;
  panel.dataset.state = "running";
  for (const list of panel.querySelectorAll(".live-errors")) { list.replaceChildren(); }
  const title = panel.querySelector(".live-title");
  if (title && form.dataset.title) { title.textContent = form.dataset.title; }
  const buttons = form.querySelectorAll("button");
  for (const b of buttons) { b.disabled = true; }
  try {
    const response = await fetch(form.action, {
      method: "POST", body, headers: { Accept: "text/event-stream" }, credentials: "same-origin",
    });
    if (!response.ok) {
      panel.querySelector(".live-text").textContent = "Refused: HTTP " + response.status + ".";
      panel.dataset.state = "failed";
      return;
    }
    await readEvents(response, (name, data) => draw(panel, form, name, data));
  } catch (error) {
    panel.querySelector(".live-text").textContent = "Failed: " + error;
    panel.dataset.state = "failed";
  } finally {
    for (const b of buttons) { b.disabled = false; }
  }
});
