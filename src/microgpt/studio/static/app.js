// microgpt studio: plain JavaScript, SVG, no libraries. Every number drawn here came from
// the server, which computed it with the microgpt engine; this file only draws.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function el(tag, attrs, parent, text) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

function fmt(x, digits = 4) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, opts);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function showError(message) {
  const banner = $("banner");
  banner.textContent = message;
  banner.hidden = !message;
}

// --- state ----------------------------------------------------------------------------------
const S = {
  state: null,
  losses: [], // [step, loss]
  val: [], // [step, loss]
  view: "train",
  pending: false,
  graph: null, // {word, position, nodes: Map, summary}
};

// --- tabs -------------------------------------------------------------------------------------
function showView(name) {
  S.view = name;
  for (const button of document.querySelectorAll("#tabs button")) {
    button.classList.toggle("active", button.dataset.view === name);
  }
  for (const section of document.querySelectorAll(".view")) {
    section.hidden = section.id !== `view-${name}`;
  }
  if (name === "inside") refreshInside();
  if (name === "embeddings" && !S.embeddings) api("/api/embeddings").then(drawEmbeddings);
  if (name === "graph") refreshGraph();
}

// --- the stream ----------------------------------------------------------------------------
function connect() {
  const source = new EventSource("/api/events");
  const conn = $("conn");
  source.onopen = () => { conn.dataset.state = "live"; conn.textContent = "live"; };
  source.onerror = () => { conn.dataset.state = "reconnecting"; conn.textContent = "reconnecting"; };
  source.addEventListener("run", (e) => onRun(JSON.parse(e.data)));
  source.addEventListener("status", (e) => onStatus(JSON.parse(e.data)));
  source.addEventListener("step", (e) => {
    const d = JSON.parse(e.data);
    S.losses.push([d.step, d.loss]);
    S.last = d;
    scheduleDraw();
  });
  source.addEventListener("val", (e) => {
    const d = JSON.parse(e.data);
    S.val.push([d.step, d.loss]);
    $("stat-val-wrap").hidden = false;
    $("stat-val").textContent = fmt(d.loss);
    scheduleDraw();
  });
  source.addEventListener("samples", (e) => {
    drawSamples(JSON.parse(e.data));
    if (S.view === "inside") refreshInside();
  });
  source.addEventListener("embeddings", (e) => drawEmbeddings(JSON.parse(e.data)));
  source.addEventListener("train_error", (e) => showError(JSON.parse(e.data).message));
}

function onRun(state) {
  S.state = state;
  S.losses = [];
  S.val = [];
  S.last = null;
  S.graph = null;
  const m = state.model;
  $("info").textContent =
    `engine ${state.engine} · ${state.num_params.toLocaleString()} params · ` +
    `${m.n_layer} layer, ${m.n_head} heads, n_embd ${m.n_embd}, context ${m.block_size} · ` +
    `vocab ${state.vocab_size} · ${state.num_docs.toLocaleString()} docs` +
    (state.num_val_docs ? ` (+${state.num_val_docs.toLocaleString()} val)` : "") +
    ` · batch ${state.batch_size} · seed ${state.seed}`;
  $("stat-steps").textContent = state.num_steps;
  $("samples-temp").textContent = state.temperature;
  $("stat-val-wrap").hidden = !state.num_val_docs;
  $("val-key").hidden = !state.num_val_docs;
  showError(state.can_train ? "" : "Training is off: the documents of this checkpoint were not found (pass --data).");
  onStatus({ running: state.running, step: state.step, num_steps: state.num_steps });
  scheduleDraw();
  if (S.view === "inside") refreshInside();
  if (S.view === "graph") refreshGraph();
}

function onStatus(status) {
  S.running = status.running;
  const done = status.step >= status.num_steps;
  $("btn-train").disabled = status.running || done || !(S.state && S.state.can_train);
  $("btn-stop").disabled = !status.running;
  $("stat-step").textContent = status.step;
  document.body.dataset.running = status.running ? "1" : "0";
}

// --- train view ---------------------------------------------------------------------------------
function scheduleDraw() {
  if (S.pending) return;
  S.pending = true;
  requestAnimationFrame(() => { S.pending = false; drawTrain(); });
}

function movingAverage(points, window) {
  const out = [];
  let sum = 0;
  for (let i = 0; i < points.length; i++) {
    sum += points[i][1];
    if (i >= window) sum -= points[i - window][1];
    out.push([points[i][0], sum / Math.min(i + 1, window)]);
  }
  return out;
}

function drawTrain() {
  const st = S.state;
  if (!st) return;
  const svg = $("loss-chart");
  clear(svg);
  const W = 720, H = 320, L = 48, R = 12, T = 12, B = 32;
  const uniform = st.uniform_loss;
  const losses = S.losses.filter((p) => p[1] !== null);
  let ymax = uniform * 1.15;
  for (const p of losses) ymax = Math.max(ymax, p[1]);
  const xmax = Math.max(st.num_steps, 1);
  const x = (s) => L + ((W - L - R) * s) / xmax;
  const y = (v) => T + (H - T - B) * (1 - v / ymax);
  // axes and ticks
  el("svg:line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }, svg);
  el("svg:line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }, svg);
  for (let k = 0; k <= 4; k++) {
    const v = (ymax * k) / 4;
    el("svg:line", { x1: L, y1: y(v), x2: W - R, y2: y(v), class: "grid" }, svg);
    el("svg:text", { x: L - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, svg, v.toFixed(1));
    const s = Math.round((xmax * k) / 4);
    el("svg:text", { x: x(s), y: H - B + 16, class: "tick", "text-anchor": "middle" }, svg, s);
  }
  el("svg:text", { x: W - R, y: H - 4, class: "tick", "text-anchor": "end" }, svg, "step");
  // the uniform guess: what a model that knows nothing scores
  el("svg:line", { x1: L, y1: y(uniform), x2: W - R, y2: y(uniform), class: "uniform" }, svg);
  el("svg:text", { x: W - R - 4, y: y(uniform) - 5, class: "tick", "text-anchor": "end" },
    svg, `uniform guess ln(${st.vocab_size}) = ${uniform.toFixed(3)}`);
  const line = (pts) => pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
  if (losses.length) {
    el("svg:polyline", { points: line(losses), class: "loss" }, svg);
    el("svg:polyline", { points: line(movingAverage(losses, 50)), class: "avg" }, svg);
  }
  if (S.val.length) {
    el("svg:polyline", { points: line(S.val), class: "val" }, svg);
    for (const p of S.val) el("svg:circle", { cx: x(p[0]), cy: y(p[1]), r: 3, class: "valdot" }, svg);
  }
  svg.dataset.steps = String(S.losses.length);
  const last = S.last;
  if (last) {
    svg.dataset.lastLoss = String(last.loss);
    $("stat-step").textContent = last.step;
    $("stat-loss").textContent = fmt(last.loss);
    const avg = movingAverage(losses, 50);
    $("stat-avg").textContent = avg.length ? fmt(avg[avg.length - 1][1]) : "–";
    $("stat-lr").textContent = last.lr.toExponential(2);
    $("stat-tps").textContent = last.tokens_per_s ? Math.round(last.tokens_per_s).toLocaleString() : "–";
  } else {
    for (const id of ["stat-loss", "stat-avg", "stat-lr", "stat-tps"]) $(id).textContent = "–";
  }
}

function drawSamples(d) {
  const list = $("samples");
  clear(list);
  list.dataset.step = String(d.step);
  $("samples-step").textContent = `at step ${d.step}`;
  for (const s of d.samples) el("li", { class: sampleClass(s) }, list, s.text || "(empty)");
}

// novel: not a training document; seen: one; null: unknown (no fingerprint)
function sampleClass(s) {
  return s.novel === null ? "" : s.novel ? "novel" : "seen";
}

// --- look inside ------------------------------------------------------------------------------
let insideTimer = null;
function refreshInside() {
  clearTimeout(insideTimer);
  insideTimer = setTimeout(loadInside, 120);
}

async function loadInside() {
  const text = $("word").value;
  const temperature = Number($("temp").value);
  $("temp-value").textContent = temperature.toFixed(2);
  try {
    const d = await api("/api/inspect", { text, temperature });
    const via = S.state && d.attention_engine !== S.state.engine
      ? ` · attention from the ${d.attention_engine} engine on the same weights` : "";
    $("inside-status").textContent = `at step ${d.step} · mean loss ${fmt(d.loss)}${via}`;
    $("word").classList.remove("bad");
    drawHeatmaps(d);
    drawProbs(d);
    drawPosLoss(d);
    document.body.dataset.inside = d.text + "@" + d.temperature;
  } catch (err) {
    $("word").classList.add("bad");
    $("inside-status").textContent = err.message;
  }
}

function heatColor(w) {
  // 0 -> near white, 1 -> deep blue
  const r = Math.round(247 - 200 * w), g = Math.round(250 - 160 * w), b = Math.round(255 - 60 * w);
  return `rgb(${r},${g},${b})`;
}

function drawHeatmaps(d) {
  const box = $("heatmaps");
  clear(box);
  const n = d.inputs.length, cell = 26, pad = 34;
  d.attention.forEach((layer, li) => {
    layer.forEach((rows, h) => {
      const fig = el("figure", { class: "heatmap" }, box);
      el("figcaption", {}, fig, `layer ${li} · head ${h}`);
      const size = pad + n * cell + 2;
      const svg = el("svg:svg", { viewBox: `0 0 ${size} ${size}`, width: size, height: size,
        class: "attn", "data-layer": li, "data-head": h }, fig);
      for (let t = 0; t < n; t++) {
        el("svg:text", { x: pad - 5, y: pad + t * cell + cell / 2 + 4, class: "tick",
          "text-anchor": "end" }, svg, d.inputs[t]);
        el("svg:text", { x: pad + t * cell + cell / 2, y: pad - 8, class: "tick",
          "text-anchor": "middle" }, svg, d.inputs[t]);
        for (let s = 0; s < n; s++) {
          const attrs = { x: pad + s * cell, y: pad + t * cell, width: cell - 1, height: cell - 1,
            "data-t": t, "data-s": s };
          if (s <= t) {
            const w = rows[t][s];
            attrs.class = "cell";
            attrs["data-w"] = String(w);
            attrs.fill = heatColor(w);
            const rect = el("svg:rect", attrs, svg);
            el("svg:title", {}, rect, `${d.inputs[t]} → ${d.inputs[s]}: ${w.toFixed(4)}`);
          } else {
            attrs.class = "cell masked";
            el("svg:rect", attrs, svg);
          }
        }
      }
    });
  });
}

function drawProbs(d) {
  const box = $("probs");
  clear(box);
  const V = d.vocab.length, bw = 14, H = 70;
  d.probs.forEach((row, t) => {
    const line = el("div", { class: "prob-row" }, box);
    const label = el("div", { class: "prob-label" }, line);
    el("span", { class: "tok" }, label, d.inputs[t]);
    el("span", { class: "muted" }, label, " → ");
    el("span", { class: "tok target" }, label, d.targets[t]);
    el("div", { class: "muted small" }, label, `loss ${fmt(d.losses[t], 3)}`);
    const svg = el("svg:svg", { viewBox: `0 0 ${V * bw} ${H + 14}`, width: V * bw, height: H + 14,
      class: "bars", "data-t": t, "data-argmax": d.argmax[t] }, line);
    const target = d.vocab.indexOf(d.targets[t]);
    row.forEach((p, i) => {
      const h = Math.max(p * H, 0.5);
      let cls = "bar";
      if (i === target) cls += " target";
      if (i === d.argmax[t]) cls += " argmax";
      const rect = el("svg:rect", { x: i * bw + 1, y: H - h, width: bw - 2, height: h, class: cls,
        "data-p": String(p), "data-token": d.vocab[i] }, svg);
      el("svg:title", {}, rect, `${d.vocab[i]}: ${p.toFixed(4)}`);
      el("svg:text", { x: i * bw + bw / 2, y: H + 11, class: "tick small", "text-anchor": "middle" },
        svg, d.vocab[i] === "BOS" ? "⏎" : d.vocab[i]);
    });
  });
}

function drawPosLoss(d) {
  const svg = $("pos-loss");
  clear(svg);
  const W = 300, H = 220, L = 30, B = 24, n = d.losses.length;
  const uniform = S.state ? S.state.uniform_loss : 3.3;
  let ymax = uniform * 1.2;
  for (const v of d.losses) if (v !== null) ymax = Math.max(ymax, v);
  const bw = (W - L - 4) / n;
  const y = (v) => 16 + (H - B - 16) * (1 - v / ymax);
  el("svg:line", { x1: L, y1: y(uniform), x2: W, y2: y(uniform), class: "uniform" }, svg);
  d.losses.forEach((v, t) => {
    const top = y(v === null ? ymax : v);
    el("svg:rect", { x: L + t * bw + 2, y: top, width: bw - 4, height: H - B - top,
      class: "lossbar", "data-loss": String(v) }, svg);
    el("svg:text", { x: L + t * bw + bw / 2, y: H - 8, class: "tick", "text-anchor": "middle" },
      svg, d.targets[t] === "BOS" ? "⏎" : d.targets[t]);
    el("svg:text", { x: L + t * bw + bw / 2, y: top - 3, class: "tick small", "text-anchor": "middle" },
      svg, fmt(v, 2));
  });
  el("svg:text", { x: L - 4, y: y(uniform) + 4, class: "tick", "text-anchor": "end" }, svg, "ln V");
}

// --- embeddings -------------------------------------------------------------------------------
function drawEmbeddings(d) {
  S.embeddings = d;
  const svg = $("emb-chart");
  clear(svg);
  const W = 640, H = 460, P = 30;
  let m = 1e-9;
  for (const [a, b] of d.points) m = Math.max(m, Math.abs(a), Math.abs(b));
  const x = (v) => W / 2 + ((W / 2 - P) * v) / m;
  const y = (v) => H / 2 - ((H / 2 - P) * v) / m;
  el("svg:line", { x1: P, y1: H / 2, x2: W - P, y2: H / 2, class: "grid" }, svg);
  el("svg:line", { x1: W / 2, y1: P, x2: W / 2, y2: H - P, class: "grid" }, svg);
  d.points.forEach(([a, b], i) => {
    const label = d.labels[i];
    const vowel = "aeiouy".includes(label);
    el("svg:circle", { cx: x(a), cy: y(b), r: 4, class: vowel ? "pt vowel" : label === "BOS" ? "pt bos" : "pt",
      "data-token": label, "data-x": String(a), "data-y": String(b) }, svg);
    el("svg:text", { x: x(a) + 6, y: y(b) + 4, class: "emb-label" }, svg, label);
  });
  el("svg:text", { x: W - P, y: H / 2 - 6, class: "tick", "text-anchor": "end" }, svg,
    `PC1 (${(100 * d.explained[0]).toFixed(0)}%)`);
  el("svg:text", { x: W / 2 + 6, y: P, class: "tick" }, svg, `PC2 (${(100 * d.explained[1]).toFixed(0)}%)`);
  $("emb-info").textContent = `at step ${d.step} · vowels highlighted`;
  svg.dataset.step = String(d.step);
}

// --- autograd graph ----------------------------------------------------------------------------
let graphTimer = null;
function refreshGraph() {
  clearTimeout(graphTimer);
  graphTimer = setTimeout(() => loadGraph(S.graph ? S.graph.position : 0), 150);
}

async function loadGraph(position) {
  const text = $("graph-word").value;
  try {
    const d = await api("/api/graph", { text, position, depth: 3 });
    $("graph-word").classList.remove("bad");
    S.graph = { text, position, step: d.step, nodes: new Map(), summary: d.summary };
    for (const node of d.nodes) S.graph.nodes.set(node.id, node);
    drawPositions(d);
    drawGraphSummary(d.summary);
    drawGraph();
    $("graph-status").textContent =
      `step ${d.step} · loss at position ${position} = ${fmt(d.summary.loss)} · ${d.summary.nodes.toLocaleString()} nodes`;
  } catch (err) {
    $("graph-word").classList.add("bad");
    $("graph-status").textContent = err.message;
    if (position !== 0 && /position/.test(err.message)) loadGraph(0);
  }
}

function drawPositions(d) {
  const box = $("graph-positions");
  clear(box);
  for (let t = 0; t + 1 < d.tokens.length; t++) {
    const b = el("button", { class: t === d.position ? "pos active" : "pos" }, box,
      `${d.tokens[t]}→${d.tokens[t + 1]}`);
    b.addEventListener("click", () => loadGraph(t));
  }
}

function drawGraphSummary(summary) {
  const ops = $("graph-ops");
  clear(ops);
  for (const [op, count] of summary.ops) {
    const tr = el("tr", {}, ops);
    el("td", { class: "mono" }, tr, op);
    el("td", { class: "num" }, tr, count.toLocaleString());
  }
  const params = $("graph-params");
  clear(params);
  for (const [name, count] of summary.params) {
    const tr = el("tr", {}, params);
    el("td", { class: "mono" }, tr, name);
    el("td", { class: "num" }, tr, count.toLocaleString());
  }
}

async function expandNode(id) {
  const g = S.graph;
  const d = await api("/api/graph", { text: g.text, position: g.position, root: id, depth: 2 });
  if (S.graph !== g) return;
  for (const node of d.nodes) if (g.nodes.size < 160 || g.nodes.has(node.id)) g.nodes.set(node.id, node);
  drawGraph();
}

function drawGraph() {
  const g = S.graph;
  const svg = $("graph-svg");
  clear(svg);
  // depth = longest distance from the root among shown nodes; the root sits on the right
  const root = g.summary.root;
  const depth = new Map([[root, 0]]);
  const order = [root];
  for (let i = 0; i < order.length; i++) {
    const node = g.nodes.get(order[i]);
    for (const c of node.children) {
      if (g.nodes.has(c) && !depth.has(c)) { depth.set(c, depth.get(order[i]) + 1); order.push(c); }
    }
  }
  const columns = new Map();
  for (const id of order) {
    const k = depth.get(id);
    if (!columns.has(k)) columns.set(k, []);
    columns.get(k).push(id);
  }
  const BW = 150, BH = 44, GX = 46, GY = 12;
  const ncol = columns.size;
  const nrow = Math.max(...[...columns.values()].map((c) => c.length));
  const W = ncol * (BW + GX) + 20, H = Math.max(nrow * (BH + GY) + 20, 120);
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  const pos = new Map();
  for (const [k, ids] of columns) {
    const x = W - 10 - BW - k * (BW + GX);
    const top = (H - ids.length * (BH + GY)) / 2;
    ids.forEach((id, r) => pos.set(id, [x, top + r * (BH + GY)]));
  }
  for (const id of order) {
    const node = g.nodes.get(id);
    const [x, y] = pos.get(id);
    for (const c of node.children) {
      if (!pos.has(c)) continue;
      const [cx, cy] = pos.get(c);
      el("svg:path", { d: `M${cx + BW},${cy + BH / 2} C${cx + BW + GX / 2},${cy + BH / 2} ` +
        `${x - GX / 2},${y + BH / 2} ${x},${y + BH / 2}`, class: "edge" }, svg);
    }
  }
  for (const id of order) {
    const node = g.nodes.get(id);
    const [x, y] = pos.get(id);
    const hidden = node.children.some((c) => !g.nodes.has(c));
    const grp = el("svg:g", { class: `gnode op-${opClass(node.op)}${hidden ? " expandable" : ""}`,
      "data-id": id, "data-op": node.op, "data-value": String(node.data), "data-grad": String(node.grad) }, svg);
    el("svg:rect", { x, y, width: BW, height: BH, rx: 6 }, grp);
    el("svg:text", { x: x + 8, y: y + 16, class: "gop" }, grp,
      (hidden ? "▸ " : "") + node.op + (node.label ? ` ${node.label}` : ""));
    el("svg:text", { x: x + 8, y: y + 30, class: "gval" }, grp, `data ${fmt(node.data)}`);
    el("svg:text", { x: x + 8, y: y + 41, class: "gval" }, grp, `grad ${fmt(node.grad)}`);
    if (hidden) grp.addEventListener("click", () => expandNode(id));
  }
  svg.parentElement.scrollLeft = svg.parentElement.scrollWidth; // the loss sits on the right
}

function opClass(op) {
  return { "+": "add", "*": "mul" }[op] || op;
}

// --- sample ----------------------------------------------------------------------------------
function pct(x) {
  return x === null || x === undefined ? "n/a" : `${(100 * x).toFixed(1)}%`;
}

function optionalInt(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

async function runSample(event) {
  event.preventDefault();
  const body = {
    prompt: $("s-prompt").value,
    temperature: Number($("s-temp").value),
    top_k: Number($("s-topk").value),
    count: Number($("s-count").value),
    novel: $("s-novel").checked,
    min_length: optionalInt("s-min"),
    max_length: optionalInt("s-max"),
  };
  const list = $("sample-list");
  try {
    const d = await api("/api/sample", body);
    clear(list);
    for (const s of d.samples) el("li", { class: sampleClass(s) }, list, s.text || "(empty)");
    const table = $("sample-report");
    clear(table);
    // sample.make_report's numbers, as `microgpt sample --report` prints them
    const r = d.report;
    const rejected = Object.entries(r.rejected).map(([why, n]) => `${n} ${why}`).join(", ");
    const trainLen = r.train_mean_length === null ? "" : ` (training: ${fmt(r.train_mean_length, 2)})`;
    const rows = [
      ["at step", d.step],
      ["samples", `${r.count} of ${r.drawn} tries` + (rejected ? ` (rejected: ${rejected})` : "")],
      ["novel", r.novel === null ? "unknown" : `${r.novel} (${pct(r.novel_share)})`],
      ["unique", `${r.unique} (duplicates ${pct(r.duplicates)})`],
      ["mean length", fmt(r.mean_length, 2) + trainLen],
      ["log-prob / char", `${fmt(r.logprob_per_char, 4)} nats`],
      ["bits / char", fmt(r.bits_per_char, 4)],
    ];
    for (const [k, v] of rows) {
      const tr = el("tr", {}, table);
      el("td", {}, tr, k);
      el("td", { class: "num" }, tr, String(v));
    }
    const head = el("tr", {}, table);
    for (const h of ["length", "samples / training"]) el("th", {}, head, h);
    for (const [label, share, train] of r.lengths) {
      const tr = el("tr", { class: "length" }, table);
      el("td", {}, tr, label);
      el("td", { class: "num" }, tr, `${pct(share)} / ${pct(train)}`);
    }
    showError("");
  } catch (err) {
    showError(err.message);
  }
}

// --- wiring ------------------------------------------------------------------------------------
function init() {
  for (const button of document.querySelectorAll("#tabs button")) {
    button.addEventListener("click", () => showView(button.dataset.view));
  }
  const control = (action) => async () => {
    try { onStatus(await api("/api/train", { action })); showError(""); } catch (err) { showError(err.message); }
  };
  $("btn-train").addEventListener("click", control("start"));
  $("btn-stop").addEventListener("click", control("stop"));
  $("btn-reset").addEventListener("click", control("reset"));
  $("word").addEventListener("input", refreshInside);
  $("temp").addEventListener("input", refreshInside);
  $("graph-word").addEventListener("input", () => { S.graph = null; refreshGraph(); });
  $("sample-form").addEventListener("submit", runSample);
  connect();
}

document.addEventListener("DOMContentLoaded", init);
