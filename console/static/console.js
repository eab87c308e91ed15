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
  source.addEventListener("registry", (event) => {
    const e = JSON.parse(event.data);
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
