// The message-switch console: three views drawn as SVG from bounded data.
//
// - The service map and the queue table come from GET /admin/api/overview, the server-side
//   sampler's JSON (the busiest queues with 5-minute series, caller → service edges with
//   their last-minute calls and latencies), polled every OVERVIEW_POLL_MS.
// - The sequence chart comes from the live trace, long-polled from GET /trace/FROM/TIMEOUT as
//   the original's page did; the page keeps at most TRACE_KEPT_MAX events and draws only the
//   last N RPCs, so its cost does not grow with the trace.
//
// Everything is written here: no library, no build step, nothing fetched but the switch's
// own endpoints. Names and payloads reach the DOM only as text, never as markup.
"use strict";

const OVERVIEW_POLL_MS = 2000;
const TRACE_KEPT_MAX = 10000;
const TRACE_WAIT_S = 5;
// A busy switch answers every trace read at once: read (and redraw) at most this often, so
// an open console costs the switch a few reads a second whatever the load.
const TRACE_READ_GAP_MS = 250;
const LABEL_CHARS_MAX = 24;
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  overview: null,
  events: [], // described trace events (describeEvent), ascending by id
  nextTrace: 0,
  paused: false,
  following: true, // the chart is scrolled to its newest arrows
  filter: null, // { caller, service } from a click on a map edge
  sort: { key: "name", dir: "asc" },
  clients: null, // the last /admin/api/clients
  clientsBefore: new Map(), // client → its counts one poll earlier, to show what changed
  // Render timings (ms) the browser test reads; the largest seen per view.
  timings: { map: 0, msc: 0, queues: 0 },
};
window.consoleState = state;

// ---------------------------------------------------------------- small helpers

const $ = (id) => document.getElementById(id);

function svg(name, attributes, parent) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes || {})) element.setAttribute(key, value);
  if (parent) parent.appendChild(element);
  return element;
}

function svgText(parent, x, y, text, attributes) {
  const element = svg("text", { x, y, ...attributes }, parent);
  element.textContent = text;
  return element;
}

function cut(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

// Names differ at their ends as often as at their starts (org.xen.xapi.xenops.classic,
// org.xen.xapi.xenops.simulator): keep both, cut the middle.
function cutMiddle(text, max) {
  if (text.length <= max) return text;
  const head = Math.ceil((max - 1) / 2);
  return `${text.slice(0, head)}…${text.slice(text.length - (max - 1 - head))}`;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 1) return "just now";
  if (seconds < 120) return `${seconds.toFixed(0)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(0)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function number(value, digits) {
  if (value === null || value === undefined) return "–";
  if (value >= 100 || Number.isInteger(value)) return Math.round(value).toLocaleString();
  return value.toFixed(digits === undefined ? 1 : digits);
}

function ms(value) {
  if (value === null || value === undefined) return "–";
  return value < 10 ? `${value.toFixed(1)} ms` : `${Math.round(value).toLocaleString()} ms`;
}

// Times follow the browser's time zone (named in the header); `t` or a click there switches
// to UTC and back, to compare with logs kept in UTC.
const LOCAL_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;

function clockFor(timeZone) {
  return new Intl.DateTimeFormat(undefined, {
    hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3, hourCycle: "h23", timeZone,
  });
}

let clock = clockFor(LOCAL_ZONE);

function timeOf(seconds) {
  return clock.format(new Date(seconds * 1000));
}

function toggleZone() {
  const zone = clock.resolvedOptions().timeZone === "UTC" && LOCAL_ZONE !== "UTC" ? LOCAL_ZONE : "UTC";
  clock = clockFor(zone);
  $("timezone").textContent = `times: ${zone}`;
  timed("msc", drawMsc);
}

function timed(view, draw) {
  const started = performance.now();
  draw();
  const elapsed = performance.now() - started;
  state.timings[view] = Math.max(state.timings[view], elapsed);
}

// ---------------------------------------------------------------- trace model

function idKey(id) {
  return `${id[0]}\u0000${id[1]}`;
}

// What one trace event is: who sends what to whom. `rpc` groups a request with its
// deliveries, its response and the acks of both.
function describeEvent(id, event) {
  const [tag, messageId, message] = event.message;
  const base = { id, event, queue: event.queue, time: event.time, messageKey: idKey(messageId) };
  if (tag === "Ack") return { ...base, kind: "ack", label: "ack", payload: "" };
  const isRequest = message.kind[0] === "Request";
  return {
    ...base,
    kind: isRequest ? "request" : "response",
    replyTo: isRequest ? message.kind[1] : null,
    requestKey: isRequest ? base.messageKey : idKey(message.kind[1]),
    requestQueue: isRequest ? messageId[0] : message.kind[1][0],
    label: summarise(message.payload, isRequest),
    payload: message.payload,
  };
}

// The label mscgen users know (message-cli mscgen): a JSON-RPC method, OK/FAILURE for a
// JSON-RPC response, else the start of the payload.
function summarise(payload, isRequest) {
  try {
    const value = JSON.parse(payload);
    if (value && typeof value === "object" && !Array.isArray(value)) {
      if (isRequest && typeof value.method === "string") return value.method;
      if (!isRequest && "id" in value) {
        if (value.success === false || (value.error !== undefined && value.error !== null)) return "FAILURE";
        if ("result" in value || value.success === true) return "OK";
      }
    }
  } catch (_) {
    // Not JSON: show the bytes.
  }
  return payload.length > 10 ? payload.slice(0, 10) : payload;
}

// Groups the kept events into RPCs, in order of their first event.
function rpcs() {
  const byKey = new Map();
  const responseToRequest = new Map();
  for (const item of state.events) {
    let key;
    if (item.kind === "request") key = item.requestKey;
    else if (item.kind === "response") {
      key = item.requestKey;
      responseToRequest.set(item.messageKey, key);
    } else key = responseToRequest.get(item.messageKey) || item.messageKey;
    let rpc = byKey.get(key);
    if (!rpc) {
      rpc = { key, caller: null, service: null, items: [] };
      byKey.set(key, rpc);
    }
    if (item.kind === "request" && item.event.input !== undefined && rpc.caller === null) {
      rpc.caller = item.event.input;
    }
    if (item.kind !== "ack" && rpc.service === null) rpc.service = item.requestQueue;
    if (item.kind === "ack" && rpc.service === null) rpc.service = item.queue;
    rpc.items.push(item);
  }
  return [...byKey.values()];
}

function matchesFilter(rpc) {
  const filter = state.filter;
  return !filter || (rpc.service === filter.service && (rpc.caller === filter.caller || rpc.caller === null));
}

// The last `count` RPCs (after the map's filter), as their events in trace order.
function selectedItems(count) {
  const chosen = rpcs().filter(matchesFilter).slice(-count);
  return chosen.flatMap((rpc) => rpc.items).sort((a, b) => a.id - b.id);
}

// ---------------------------------------------------------------- sequence chart

const MSC_STYLE = `
  text { font: 12px system-ui, sans-serif; fill: var(--fg, #1b2130); }
  .head rect { fill: var(--node, #eef2fb); stroke: var(--line, #c9ced8); }
  .head.queue rect { fill: var(--node-svc, #eaf6ee); }
  .head text { font-weight: 600; }
  .strip { fill: var(--panel, #ffffff); }
  .life { stroke: var(--line, #c9ced8); stroke-dasharray: 4 4; }
  .time { fill: var(--muted, #667085); font-variant-numeric: tabular-nums; }
  .arrow line { stroke-width: 1.6; }
  .arrow.request line { stroke: var(--req, #2457c5); }
  .arrow.request.delivery line, .arrow.response.delivery line { stroke-dasharray: 5 3; }
  .arrow.response line { stroke: var(--resp, #1e7b34); }
  .arrow.failure line { stroke: var(--bad, #c0271d); }
  .arrow.ack line { stroke: var(--ack, #8a93a6); stroke-dasharray: 2 3; }
  .arrow text { fill: var(--fg, #1b2130); }
  .arrow.ack text { fill: var(--muted, #667085); }
  .arrow:hover text, .arrow:focus text { font-weight: 700; }
  .arrow { cursor: pointer; outline: none; }
  .marker-request { fill: var(--req, #2457c5); }
  .marker-response { fill: var(--resp, #1e7b34); }
  .marker-failure { fill: var(--bad, #c0271d); }
  .marker-ack { fill: var(--ack, #8a93a6); }
`;

function participantsOf(items) {
  const seen = new Map();
  const add = (kind, name) => {
    const key = `${kind}:${name}`;
    if (!seen.has(key)) seen.set(key, { key, kind, name });
  };
  for (const item of items) {
    if (item.event.input !== undefined) add("session", item.event.input);
    add("queue", item.queue);
    if (item.event.output !== undefined) add("session", item.event.output);
  }
  return [...seen.values()];
}

// One arrow per event: a send or an ack goes from the session to the queue, a delivery
// from the queue to the session that received it.
function arrowOf(item) {
  const event = item.event;
  const delivery = event.output !== undefined;
  const from = delivery ? `queue:${item.queue}` : `session:${event.input}`;
  const to = delivery ? `session:${event.output}` : `queue:${item.queue}`;
  const classes = ["arrow", item.kind];
  if (delivery) classes.push("delivery");
  if (item.label === "FAILURE") classes.push("failure");
  return { from, to, classes };
}

function drawMsc() {
  const chart = $("msc");

  const count = Number($("rpc-count").value);
  const items = selectedItems(count);
  const participants = participantsOf(items);
  chart.replaceChildren();
  $("msc-empty").hidden = items.length > 0;
  $("msc-count").textContent = `${items.length} arrows · ${state.events.length} events kept`;
  const column = 150;
  const left = 110;
  const top = 44;
  const row = 24;
  const width = left + Math.max(1, participants.length) * column;
  const height = top + items.length * row + 20;
  chart.setAttribute("width", width);
  chart.setAttribute("height", height);
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg("style", {}, chart).textContent = MSC_STYLE;
  const defs = svg("defs", {}, chart);
  for (const kind of ["request", "response", "failure", "ack"]) {
    const marker = svg("marker", {
      id: `head-${kind}`, viewBox: "0 0 10 10", refX: 10, refY: 5,
      markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
    }, defs);
    svg("path", { d: "M0,0 L10,5 L0,10 z", class: `marker-${kind}` }, marker);
  }
  const x = new Map();
  participants.forEach((participant, index) => {
    const center = left + index * column + column / 2;
    x.set(participant.key, center);
    const head = svg("g", { class: `head ${participant.kind}` }, chart);
    svg("title", {}, head).textContent = `${participant.kind} ${participant.name}`;
    svg("rect", { x: center - column / 2 + 6, y: 6, width: column - 12, height: 24, rx: participant.kind === "session" ? 12 : 3 }, head);
    svgText(head, center, 22, cutMiddle(participant.name, 19), { "text-anchor": "middle" });
    svg("line", { class: "life", x1: center, y1: 30, x2: center, y2: height - 6 }, chart);
  });
  stickyHeads(chart, width);
  items.forEach((item, index) => {
    const y = top + index * row + row / 2;
    svgText(chart, 6, y + 4, timeOf(item.time), { class: "time" });
    const { from, to, classes } = arrowOf(item);
    const x1 = x.get(from);
    const x2 = x.get(to);
    const group = svg("g", { class: classes.join(" "), tabindex: 0, "data-event": item.id, role: "button" }, chart);
    svg("title", {}, group).textContent = tooltip(item);
    const marker = classes.includes("failure") ? "failure" : item.kind;
    const direction = x2 >= x1 ? 1 : -1;
    // A wide invisible line makes the arrow easy to point at (inline style beats the
    // class rules that colour the visible line).
    svg("line", { class: "hit", x1, y1: y, x2, y2: y, style: "stroke: transparent; stroke-width: 14px" }, group);
    svg("line", { x1, y1: y, x2: x2 - direction * 2, y2: y, "marker-end": `url(#head-${marker})` }, group);
    svgText(group, (x1 + x2) / 2, y - 4, cut(item.label, LABEL_CHARS_MAX), { "text-anchor": "middle" });
    group.addEventListener("click", () => showDetail(item));
    group.addEventListener("keydown", (key) => {
      if (key.key === "Enter" || key.key === " ") {
        key.preventDefault();
        showDetail(item);
      }
    });
  });
  followMsc();
}

// Copies the participants' heads into the sticky strip above the chart.
function stickyHeads(chart, width) {
  const strip = $("msc-heads");
  strip.replaceChildren();
  strip.setAttribute("width", width);
  strip.setAttribute("height", 34);
  svg("style", {}, strip).textContent = MSC_STYLE;
  svg("rect", { x: 0, y: 0, width, height: 34, class: "strip" }, strip);
  for (const head of chart.querySelectorAll("g.head")) strip.appendChild(head.cloneNode(true));
}

// Shows the newest arrows (at the bottom) unless the operator scrolled up to read.
function followMsc() {
  const scroller = $("msc").parentElement;
  if (state.following) scroller.scrollTop = scroller.scrollHeight;
}

function tooltip(item) {
  const event = item.event;
  const who = event.output !== undefined ? `${item.queue} → ${event.output}` : `${event.input} → ${item.queue}`;
  const head = `#${item.id} ${item.kind} ${who} at ${timeOf(item.time)}`;
  return item.payload ? `${head}\n${item.payload}` : head;
}

function showDetail(item) {
  $("detail-title").textContent = `#${item.id} ${item.kind} · ${item.queue} · ${timeOf(item.time)}`;
  const event = item.event;
  const lines = [];
  if (event.input !== undefined) lines.push(`from session: ${event.input}`);
  if (event.output !== undefined) lines.push(`to session:   ${event.output}`);
  lines.push(`queue:        ${item.queue}`);
  if (item.replyTo) lines.push(`reply to:     ${item.replyTo}`);
  if (event.processing_time !== undefined) lines.push(`processing:   ${ms(event.processing_time / 1e6)}`);
  let payload = item.payload;
  try {
    payload = JSON.stringify(JSON.parse(payload), null, 2);
  } catch (_) {
    // Not JSON: show it as it is.
  }
  if (item.kind !== "ack") lines.push("", payload);
  $("detail-body").textContent = lines.join("\n");
  $("detail").hidden = false;
}

function mscgenQuote(name) {
  return `"${String(name).replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`;
}

// The chart as mscgen input, in the form `message-cli mscgen` prints.
function mscgenText() {
  const items = selectedItems(Number($("rpc-count").value));
  const names = new Set();
  for (const item of items) {
    names.add(item.queue);
    if (item.event.input !== undefined) names.add(item.event.input);
    if (item.event.output !== undefined) names.add(item.event.output);
  }
  const sorted = [...names].sort();
  const lines = ["msc {", `${sorted.map(mscgenQuote).join(",")};`];
  for (const item of items) {
    if (item.kind === "ack") continue;
    const label = `[ label = ${mscgenQuote(item.label)} ] ;`;
    const queue = mscgenQuote(item.queue);
    if (item.kind === "response" && item.event.input !== undefined) {
      lines.push(`${queue} << ${mscgenQuote(item.event.input)} ${label}`);
    } else if (item.kind === "request") {
      if (item.event.output !== undefined) lines.push(`${queue} => ${mscgenQuote(item.event.output)} ${label}`);
      if (item.event.input !== undefined) lines.push(`${mscgenQuote(item.event.input)} => ${queue} ${label}`);
    }
  }
  lines.push("}");
  return `${lines.join("\n")}\n`;
}

function download(name, type, text) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type }));
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function svgDocument() {
  const chart = $("msc").cloneNode(true);
  chart.setAttribute("xmlns", SVG_NS);
  return `<?xml version="1.0" encoding="UTF-8"?>\n${new XMLSerializer().serializeToString(chart)}\n`;
}

// ---------------------------------------------------------------- service map

function mapModel(overview) {
  const queues = new Map(overview.queues.map((queue) => [queue.name, queue]));
  const callers = new Set();
  const services = new Set();
  for (const edge of overview.edges) {
    callers.add(edge.caller);
    services.add(edge.service);
  }
  // A service with a live listener is on the map even when nobody calls it.
  for (const queue of overview.queues) {
    if (!queue.transient && queue.listener === "alive") services.add(queue.name);
  }
  const edges = overview.edges.map((edge) => {
    const queue = queues.get(edge.service);
    const noListener = queue !== undefined && queue.listener !== "alive" && queue.depth > 0;
    return { ...edge, noListener, queue };
  });
  return { callers: [...callers].sort(), services: [...services].sort(), edges, queues };
}

function drawMap() {
  const overview = state.overview;
  const map = $("map");
  map.replaceChildren();
  if (!overview) return;
  const model = mapModel(overview);
  $("map-empty").hidden = model.callers.length + model.services.length > 0;
  const nodeWidth = 230;
  const nodeHeight = 42;
  const gap = 18;
  // From the window, not the panel: reading a laid-out size would force a layout of the
  // whole page on every redraw.
  const width = Math.max(900, window.innerWidth - 42);
  const rows = Math.max(model.callers.length, model.services.length, 1);
  const height = 44 + rows * (nodeHeight + gap);
  map.setAttribute("width", width);
  map.setAttribute("height", height);
  map.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg("style", {}, map).textContent = MAP_STYLE;
  const defs = svg("defs", {}, map);
  for (const kind of ["ok", "bad", "warn"]) {
    const marker = svg("marker", { id: `map-${kind}`, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, orient: "auto" }, defs);
    svg("path", { d: "M0,0 L10,5 L0,10 z", class: `tip-${kind}` }, marker);
  }
  svgText(map, 20, 18, "callers (sessions)", { class: "column" });
  svgText(map, width - nodeWidth - 20, 18, "services (queues)", { class: "column" });
  const position = new Map();
  const rowY = (index) => 44 + index * (nodeHeight + gap);
  model.callers.forEach((name, index) => position.set(`c:${name}`, { x: 20, y: rowY(index) }));
  model.services.forEach((name, index) => position.set(`s:${name}`, { x: width - nodeWidth - 20, y: rowY(index) }));
  const edgeLayer = svg("g", { class: "edges" }, map);
  const incoming = new Map();
  for (const edge of model.edges) {
    const from = position.get(`c:${edge.caller}`);
    const to = position.get(`s:${edge.service}`);
    const x1 = from.x + nodeWidth;
    const y1 = from.y + nodeHeight / 2;
    const x2 = to.x;
    const y2 = to.y + nodeHeight / 2;
    const kind = edge.noListener ? "bad" : edge.errors > 0 ? "warn" : "ok";
    const group = svg("g", {
      class: `edge ${kind}`, tabindex: 0, role: "button",
      "data-caller": edge.caller, "data-service": edge.service,
      "aria-label": `${edge.caller} calls ${edge.service}: ${edgeLabel(edge)}`,
    }, edgeLayer);
    svg("title", {}, group).textContent = `${edge.caller} → ${edge.service}\n${edgeLabel(edge)}${edge.estimated ? "\n(estimated: the trace overflowed between samples)" : ""}`;
    const bend = (x2 - x1) / 2;
    const d = `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2 - 2},${y2}`;
    svg("path", { class: "hit", d }, group);
    const strokeWidth = Math.min(6, 1.5 + Math.log10(1 + edge.calls));
    svg("path", { class: "line", d, "stroke-width": strokeWidth, "marker-end": `url(#map-${kind})` }, group);
    // Each label sits just before its arrowhead, stacked above the others that point at the
    // same service, so that crossing curves never pile their labels up.
    const stack = incoming.get(edge.service) || 0;
    incoming.set(edge.service, stack + 1);
    svgText(group, x2 - 14, y2 - 6 - stack * 14, edgeLabel(edge), { "text-anchor": "end", class: "label" });
    const open = () => filterByEdge(edge.caller, edge.service);
    group.addEventListener("click", open);
    group.addEventListener("keydown", (key) => {
      if (key.key === "Enter" || key.key === " ") {
        key.preventDefault();
        open();
      }
    });
  }
  for (const name of model.callers) drawNode(map, position.get(`c:${name}`), nodeWidth, nodeHeight, "caller", name, "session");
  for (const name of model.services) {
    const queue = model.queues.get(name);
    let detail = "no data";
    let kind = "service";
    if (queue) {
      detail = queue.server ? `served by ${queue.server}` : `listener: ${queue.listener}`;
      if (queue.listener !== "alive") {
        detail = queue.depth > 0 ? `${queue.depth} waiting · no listener` : `listener: ${queue.listener}`;
        if (queue.depth > 0) kind = "service waiting";
      }
    }
    drawNode(map, position.get(`s:${name}`), nodeWidth, nodeHeight, kind, name, detail);
  }
}

function edgeLabel(edge) {
  const parts = [`${number(edge.calls)}/min`];
  if (edge.p50_ms !== null) parts.push(`p50 ${ms(edge.p50_ms)}`);
  if (edge.p99_ms !== null) parts.push(`p99 ${ms(edge.p99_ms)}`);
  if (edge.errors > 0) parts.push(`${edge.errors} error${edge.errors === 1 ? "" : "s"}`);
  if (edge.noListener) parts.push("no listener");
  return (edge.estimated ? "≈ " : "") + parts.join(" · ");
}

function drawNode(map, at, width, height, kind, name, detail) {
  const group = svg("g", { class: `node ${kind}`, "data-node": name }, map);
  svg("title", {}, group).textContent = `${name}\n${detail}`;
  svg("rect", { x: at.x, y: at.y, width, height, rx: kind === "caller" ? 21 : 5 }, group);
  svgText(group, at.x + 12, at.y + 17, cutMiddle(name, 32), { class: "name" });
  svgText(group, at.x + 12, at.y + 33, cut(detail, 34), { class: "detail" });
}

const MAP_STYLE = `
  text { font: 12px system-ui, sans-serif; fill: var(--fg, #1b2130); }
  .column { fill: var(--muted, #667085); font-weight: 600; }
  .node rect { fill: var(--node, #eef2fb); stroke: var(--line, #c9ced8); }
  .node.service rect { fill: var(--node-svc, #eaf6ee); }
  .node.waiting rect { stroke: var(--bad, #c0271d); stroke-width: 2; }
  .node .name { font-weight: 600; }
  .node .detail { fill: var(--muted, #667085); font-size: 11px; }
  .node.waiting .detail { fill: var(--bad, #c0271d); }
  .edge .line { fill: none; stroke: var(--req, #2457c5); opacity: .75; }
  .edge.bad .line { stroke: var(--bad, #c0271d); stroke-dasharray: 7 4; opacity: 1; }
  .edge.warn .line { stroke: var(--warn, #c76a00); opacity: 1; }
  .edge .hit { fill: none; stroke: transparent; stroke-width: 16; }
  .edge { cursor: pointer; outline: none; }
  .edge:hover .line, .edge:focus .line { opacity: 1; stroke-width: 4; }
  .edge .label { font-size: 11px; paint-order: stroke; stroke: var(--panel, #fff); stroke-width: 4px; }
  .edge.bad .label { fill: var(--bad, #c0271d); font-weight: 600; }
  .edge.warn .label { fill: var(--warn, #c76a00); }
  .tip-ok { fill: var(--req, #2457c5); } .tip-bad { fill: var(--bad, #c0271d); } .tip-warn { fill: var(--warn, #c76a00); }
`;

function filterByEdge(caller, service) {
  state.filter = { caller, service };
  $("msc-filter").hidden = false;
  $("msc-filter-text").textContent = `${caller} → ${service}`;
  selectTab("tab-msc");
  timed("msc", drawMsc);
}

function clearFilter() {
  state.filter = null;
  $("msc-filter").hidden = true;
  timed("msc", drawMsc);
}

// ---------------------------------------------------------------- queues

function sparkline(values, className, title) {
  const width = 120;
  const height = 24;
  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: `spark ${className}` });
  svg("title", {}, chart).textContent = title;
  svg("line", { class: "base", x1: 0, y1: height - 1.5, x2: width, y2: height - 1.5 }, chart);
  const max = Math.max(1, ...values.filter((v) => v !== null));
  const step = width / Math.max(1, values.length - 1);
  const points = [];
  values.forEach((value, index) => {
    if (value !== null) points.push([index * step, height - 2 - (value / max) * (height - 4)]);
  });
  if (points.length === 1) svg("circle", { cx: points[0][0], cy: points[0][1], r: 2 }, chart);
  if (points.length > 0) {
    const line = points.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" ");
    const first = points[0][0].toFixed(1);
    const last = points[points.length - 1][0].toFixed(1);
    svg("polygon", { class: "area", points: `${first},${height} ${line} ${last},${height}` }, chart);
    svg("polyline", { points: line }, chart);
  }
  return chart;
}

function waiting(queue) {
  return queue.depth > 0 && queue.listener !== "alive";
}

function sortedQueues(queues) {
  const { key, dir } = state.sort;
  const value = {
    name: (q) => q.name,
    depth: (q) => q.depth,
    rate: (q) => q.send_rate,
    age: (q) => (q.oldest_age_s === null ? -1 : q.oldest_age_s),
  }[key];
  const sign = dir === "asc" ? 1 : -1;
  return [...queues].sort((a, b) => {
    const va = value(a);
    const vb = value(b);
    if (va < vb) return -sign;
    if (va > vb) return sign;
    return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  });
}

function cell(row, value, className) {
  const td = row.insertCell();
  if (value instanceof Node) td.appendChild(value);
  else td.textContent = value === null || value === undefined ? "" : String(value);
  if (className) td.className = className;
  return td;
}

function drawQueues() {
  const overview = state.overview;
  if (!overview) return;
  const filter = $("queue-filter").value.trim().toLowerCase();
  const shown = sortedQueues(overview.queues.filter((q) => q.name.toLowerCase().includes(filter)));
  const body = document.querySelector("#queues tbody");
  body.replaceChildren();
  const span = age(overview.spark_seconds);
  for (const queue of shown) {
    const row = body.insertRow();
    row.dataset.queue = queue.name;
    if (waiting(queue)) row.className = "waiting";
    cell(row, queue.name);
    cell(row, queue.transient ? "transient" : "persistent");
    cell(row, queue.depth.toLocaleString(), "num");
    cell(row, sparkline(queue.depth_series, "depth", `depth over the last ${span} (max per point)`));
    cell(row, number(queue.send_rate, 2), "num");
    cell(row, sparkline(queue.send_series, "sends", `sends per second over the last ${span}`));
    cell(row, age(queue.oldest_age_s), "num");
    const listener = cell(row, "", queue.listener);
    if (waiting(queue)) {
      const marker = document.createElement("span");
      marker.className = "marker";
      marker.dataset.waiting = queue.depth;
      marker.textContent = `⚠ ${queue.depth} waiting, no listener, oldest ${age(queue.oldest_age_s)}`;
      listener.appendChild(marker);
    } else {
      listener.textContent = queue.server ? `${queue.listener} (${queue.server})` : queue.listener;
    }
  }
  const untracked = overview.untracked.queues;
  let count = `${shown.length} of ${overview.queues.length} shown`;
  if (untracked > 0) count += ` · ${untracked.toLocaleString()} quieter queues not sampled (${overview.untracked.messages.toLocaleString()} messages)`;
  $("queue-count").textContent = count;
  $("no-queues").hidden = overview.queues.length > 0;
  for (const button of document.querySelectorAll("th button")) {
    button.dataset.active = button.dataset.sort === state.sort.key ? state.sort.dir : "";
  }
}

// ---------------------------------------------------------------- clients

// What the per-client limits and the fair scheduling did to `client` since the last poll.
function clientTrouble(client) {
  const before = state.clientsBefore.get(client.client);
  const since = (key) => client[key] - (before ? before[key] : 0);
  const reasons = [];
  if (since("refused_connections") > 0) reasons.push(`refused ${since("refused_connections")}: too many open`);
  if (since("refused_rate") > 0) reasons.push(`refused ${since("refused_rate")}: too fast`);
  if (since("held") > 0) reasons.push(`held back ${since("held")}: connecting too fast`);
  if (since("turns_cut_short") > 0) reasons.push(`slowed: more than its share`);
  if (since("refusals_held") > 0) reasons.push(`${since("refusals_held")} refusals held: keeps sending what is refused`);
  return reasons;
}

function drawClients() {
  const view = state.clients;
  if (!view) return;
  const limits = view.limits;
  const rate = limits.connects_per_second > 0
    ? `${limits.connects_per_second} new/s after a burst of ${limits.connect_burst}`
    : "no rate limit";
  $("client-limits").textContent = `per client: ${limits.connections_max} open, ${rate}`;
  const body = document.querySelector("#clients tbody");
  body.replaceChildren();
  for (const client of view.clients) {
    const row = body.insertRow();
    row.dataset.client = client.client;
    const trouble = clientTrouble(client);
    if (trouble.length > 0) row.className = "waiting";
    cell(row, client.client);
    cell(row, client.open.toLocaleString(), "num");
    cell(row, client.accepted.toLocaleString(), "num");
    cell(row, client.held.toLocaleString(), "num");
    cell(row, number(client.held_s, 1), "num");
    cell(row, client.refused_connections.toLocaleString(), "num");
    cell(row, client.refused_rate.toLocaleString(), "num");
    cell(row, client.turns_cut_short.toLocaleString(), "num");
    cell(row, trouble.join(", "));
  }
  $("client-count").textContent = `${view.clients.length} of ${view.remembered} clients shown, most held back first`;
  $("no-clients").hidden = view.clients.length > 0;
}

// The alert naming the clients held back or refused since the last poll.
function clientAlert() {
  if (!state.clients) return null;
  const troubled = state.clients.clients
    .map((client) => [client.client, clientTrouble(client)])
    .filter(([, trouble]) => trouble.length > 0);
  if (troubled.length === 0) return null;
  const text = troubled.slice(0, 3).map(([name, trouble]) => `${name} (${trouble.join(", ")})`).join("; ");
  return `Clients held back by the limits: ${text}${troubled.length > 3 ? " …" : ""}`;
}

// ---------------------------------------------------------------- header and alerts

function drawHeader() {
  const overview = state.overview;
  const totals = overview.totals;
  $("status").textContent = `up ${age(totals.uptime_s)}`;
  $("status").className = "";
  const rate = overview.totals.send_series.filter((v) => v !== null).slice(-1)[0];
  const parts = [
    ["queues", totals.queues], ["messages", totals.messages], ["connections", totals.connections],
    ["sessions", totals.sessions], ["waiting transfers", totals.parked_transfers],
  ];
  const container = $("totals");
  container.replaceChildren();
  for (const [label, value] of parts) {
    const b = document.createElement("b");
    b.textContent = value.toLocaleString();
    container.append(b, ` ${label}  `);
  }
  const b = document.createElement("b");
  b.textContent = number(rate === undefined ? 0 : rate);
  container.append(b, " sends/s");
  const stuck = overview.queues.filter(waiting);
  const alerts = $("alerts");
  alerts.replaceChildren();
  const clients = clientAlert();
  if (clients) {
    alerts.append(clients);
    const show = document.createElement("button");
    show.textContent = "show";
    show.addEventListener("click", () => selectTab("tab-clients"));
    alerts.append(show, " ");
  }
  if (stuck.length > 0) {
    const names = stuck.slice(0, 5).map((q) => `${q.name} (${q.depth}, oldest ${age(q.oldest_age_s)})`).join(", ");
    alerts.append(`Requests waiting on ${stuck.length === 1 ? "a queue" : `${stuck.length} queues`} with no listener: ${names}${stuck.length > 5 ? " …" : ""}`);
    const show = document.createElement("button");
    show.textContent = "show";
    show.addEventListener("click", () => selectTab("tab-queues"));
    alerts.append(show);
  }
}

// ---------------------------------------------------------------- polling

async function pollOverview() {
  for (;;) {
    try {
      const response = await fetch("/admin/api/overview", { cache: "no-store" });
      if (!response.ok) throw new Error(`status ${response.status}`);
      state.overview = await response.json();
      const clients = await fetch("/admin/api/clients", { cache: "no-store" });
      if (clients.ok) {
        if (state.clients) state.clientsBefore = new Map(state.clients.clients.map((c) => [c.client, c]));
        state.clients = await clients.json();
        drawClients();
      }
      if (state.overview.now !== null) {
        drawHeader();
        timed("map", drawMap);
        timed("queues", drawQueues);
      } else {
        // No sample yet (or the sampler is off): only the chart, from the trace, is live.
        $("status").textContent = "waiting for the first sample";
        $("status").className = "";
      }
    } catch (error) {
      $("status").textContent = `switch unreachable (${error.message})`;
      $("status").className = "down";
    }
    await new Promise((resolve) => setTimeout(resolve, OVERVIEW_POLL_MS));
  }
}

async function pollTrace() {
  for (;;) {
    try {
      const response = await fetch(`/trace/${state.nextTrace}/${TRACE_WAIT_S}`, { cache: "no-store" });
      if (!response.ok) throw new Error(`status ${response.status}`);
      const { events } = JSON.parse(await response.text());
      for (const [id, event] of events) {
        // Described once, on arrival: redraws only group and draw.
        state.events.push(describeEvent(id, event));
        state.nextTrace = Math.max(state.nextTrace, id + 1);
      }
      if (state.events.length > TRACE_KEPT_MAX) state.events.splice(0, state.events.length - TRACE_KEPT_MAX);
      if (events.length > 0 && !state.paused) timed("msc", drawMsc);
      if (events.length > 0) await new Promise((resolve) => setTimeout(resolve, TRACE_READ_GAP_MS));
    } catch (error) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

// ---------------------------------------------------------------- tabs and keyboard

function selectTab(id) {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const selected = tab.id === id;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !selected;
  }
  // The view is in the address, so that it can be bookmarked and survives a reload.
  const hash = `#${id.slice(4)}`;
  if (location.hash !== hash) history.replaceState(null, "", hash);
  // The window may have been resized while the map was hidden.
  if (id === "tab-map") timed("map", drawMap);
  if (id === "tab-msc") followMsc();
}

function setPaused(paused) {
  state.paused = paused;
  $("pause").setAttribute("aria-pressed", String(paused));
  $("pause").firstChild.textContent = paused ? "Resume " : "Pause ";
  if (!paused) timed("msc", drawMsc);
}

function typing(target) {
  return target instanceof HTMLInputElement || target instanceof HTMLSelectElement;
}

function setUp() {
  $("timezone").textContent = `times: ${LOCAL_ZONE}`;
  $("timezone").addEventListener("click", toggleZone);
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => selectTab(tab.id));
    tab.addEventListener("keydown", (key) => {
      const step = key.key === "ArrowRight" ? 1 : key.key === "ArrowLeft" ? -1 : 0;
      if (step === 0) return;
      const next = tabs[(index + step + tabs.length) % tabs.length];
      selectTab(next.id);
      next.focus();
    });
  });
  const linked = tabs.find((tab) => `#${tab.id.slice(4)}` === location.hash);
  if (linked) selectTab(linked.id);
  $("pause").addEventListener("click", () => setPaused(!state.paused));
  const scroller = $("msc").parentElement;
  scroller.addEventListener("scroll", () => {
    if (scroller.clientHeight > 0) {
      state.following = scroller.scrollTop + scroller.clientHeight >= scroller.scrollHeight - 30;
    }
  });
  $("rpc-count").addEventListener("change", () => timed("msc", drawMsc));
  $("clear-filter").addEventListener("click", clearFilter);
  $("detail-close").addEventListener("click", () => { $("detail").hidden = true; });
  $("download-svg").addEventListener("click", () => download("message-switch.svg", "image/svg+xml", svgDocument()));
  $("download-mscgen").addEventListener("click", () => download("message-switch.msc", "text/plain", mscgenText()));
  $("queue-filter").addEventListener("input", () => timed("queues", drawQueues));
  for (const button of document.querySelectorAll("th button")) {
    button.addEventListener("click", () => {
      const key = button.dataset.sort;
      const dir = state.sort.key === key && state.sort.dir === "asc" ? "desc" : key === "name" ? "asc" : state.sort.key === key ? "asc" : "desc";
      state.sort = { key, dir };
      timed("queues", drawQueues);
    });
  }
  document.addEventListener("keydown", (key) => {
    if (key.ctrlKey || key.metaKey || key.altKey) return;
    if (key.key === "Escape") {
      if (!$("detail").hidden) $("detail").hidden = true;
      else if (state.filter) clearFilter();
      else if (typing(key.target)) key.target.blur();
      return;
    }
    if (typing(key.target)) return;
    const tab = tabs.find((t) => t.dataset.key === key.key);
    if (tab) selectTab(tab.id);
    else if (key.key === "p") setPaused(!state.paused);
    else if (key.key === "t") toggleZone();
    else if (key.key === "/") {
      key.preventDefault();
      selectTab("tab-queues");
      $("queue-filter").focus();
    }
  });
}

setUp();
pollOverview();
pollTrace();
