// The message-switch console: a queue table built from the diagnostics (GET /) and a live
// trace that long-polls GET /trace/FROM/TIMEOUT, as the original switch's page did.
"use strict";

const TRACE_ROWS_MAX = 500;
const LISTENER_GRACE_NS = 30e9;

function text(value) {
  return value === undefined || value === null ? "" : String(value);
}

function cell(row, value, className) {
  const td = row.insertCell();
  td.textContent = text(value);
  if (className) td.className = className;
  return td;
}

function age(ns) {
  if (ns === null) return "";
  const seconds = Math.max(0, ns / 1e9);
  if (seconds < 1) return "just now";
  if (seconds < 120) return `${seconds.toFixed(0)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(0)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function listener(queue, now) {
  const expected = queue.next_transfer_expected;
  if (expected === undefined) return ["none", "none"];
  if (expected + LISTENER_GRACE_NS < now) return ["stale", "stale"];
  return ["alive", "alive"];
}

function renderQueues(diagnostics) {
  const now = diagnostics.current_time;
  const rows = [];
  for (const [kind, queues] of [["persistent", diagnostics.permanent_queues], ["transient", diagnostics.transient_queues]]) {
    for (const [name, queue] of Object.entries(queues)) rows.push({ name, kind, queue });
  }
  rows.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const body = document.querySelector("#queues tbody");
  body.replaceChildren();
  for (const { name, kind, queue } of rows) {
    const row = body.insertRow();
    row.dataset.queue = name;
    cell(row, name);
    cell(row, kind);
    const contents = queue.queue_contents;
    cell(row, contents.length, "num");
    // Entries come newest first: the oldest is the last one.
    const oldest = contents.length ? now - contents[contents.length - 1][1].time : null;
    cell(row, age(oldest), "num");
    const [label, className] = listener(queue, now);
    cell(row, label, className);
  }
  document.getElementById("queue-count").textContent = `(${rows.length})`;
  document.getElementById("no-queues").hidden = rows.length > 0;
  document.getElementById("status").textContent = `up ${age(now)}`;
  document.getElementById("status").className = "";
}

async function pollQueues() {
  for (;;) {
    try {
      const response = await fetch("/");
      if (!response.ok) throw new Error(`status ${response.status}`);
      renderQueues(JSON.parse(await response.text()));
    } catch (error) {
      const status = document.getElementById("status");
      status.textContent = `switch unreachable (${error.message})`;
      status.className = "down";
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function describe(event) {
  const message = event.message;
  const [tag, id] = message;
  const label = `${id[0]}.${id[1]}`;
  if (tag === "Ack") return `${label}: ack`;
  const kind = message[2].kind;
  const what = kind[0] === "Request" ? `request (reply to ${kind[1]})` : `response to ${kind[1][0]}.${kind[1][1]}`;
  return `${label}: ${what}: ${message[2].payload}`;
}

function addTraceRow(id, event) {
  const body = document.querySelector("#trace tbody");
  const row = body.insertRow(0);
  row.dataset.event = id;
  cell(row, id, "num");
  cell(row, new Date(event.time * 1000).toISOString().slice(11, 23));
  cell(row, event.input || "-");
  cell(row, "→");
  cell(row, event.queue);
  cell(row, event.output ? "→" : "");
  cell(row, event.output || "");
  cell(row, describe(event), "msg");
  while (body.rows.length > TRACE_ROWS_MAX) body.deleteRow(-1);
  document.getElementById("trace-count").textContent = `(${body.rows.length} shown)`;
}

async function pollTrace() {
  let next = 0;
  for (;;) {
    try {
      const response = await fetch(`/trace/${next}/5`);
      if (!response.ok) throw new Error(`status ${response.status}`);
      const { events } = JSON.parse(await response.text());
      for (const [id, event] of events) {
        addTraceRow(id, event);
        next = Math.max(next, id + 1);
      }
    } catch (error) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

pollQueues();
pollTrace();
