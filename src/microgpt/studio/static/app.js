// microgpt studio: plain JavaScript, SVG, no libraries. Every number drawn here came from
// the server, which computed it with the microgpt engine; this file only draws, and keeps
// one selected (word, position) that every view shows.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const SPEEDS = [1, 2, 5, 10, 20, 50, 100, 200, 500, null]; // steps per second; null: full
const MA = 50; // steps in the moving average

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

function pct(x, digits = 1) {
  return x === null || x === undefined ? "n/a" : `${(100 * x).toFixed(digits)}%`;
}

function sig(x) { // a number for a node: 4 significant digits, small ones in e-notation
  if (x === null || x === undefined) return "–";
  const a = Math.abs(x);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? x.toExponential(3) : Number(x.toPrecision(4)).toString();
}

function tokText(t) { return t === "BOS" ? "BOS" : `'${t}'`; }

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

// Round ticks covering [lo, hi]: steps of 1, 2 or 5 times a power of ten.
function niceTicks(lo, hi, count) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  const step = (f > 5 ? 10 : f > 2 ? 5 : f > 1 ? 2 : 1) * mag;
  const ticks = []; // k × step, so that 0 is exactly 0 (never "-0.0")
  for (let k = Math.floor(lo / step + 1e-9); k * step < hi + step * 0.999; k++) {
    ticks.push(Number((k * step).toPrecision(12)) || 0);
  }
  const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return { ticks, digits };
}

function boxWidth(id, min = 240) {
  return Math.max(min, Math.floor($(id).clientWidth));
}

// --- state ----------------------------------------------------------------------------------
const S = {
  state: null,
  losses: [], // [step, loss]
  avg: [], // [step, moving average]
  val: [], // [step, loss]
  last: null,
  view: "train",
  sel: { word: "emma", t: 0 }, // the one selected (word, position), shared by every view
  inside: null, // the last look-inside answer
  snaps: [], // embedding snapshots over training
  snapIndex: 0,
  follow: true, // the slider follows new snapshots
  graph: null,
  sampling: false,
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
  if (name === "train") drawLoss();
  if (name === "inside") refreshInside();
  if (name === "embeddings") drawEmbeddings();
  if (name === "graph") loadGraph(null);
}

// --- the stream ----------------------------------------------------------------------------
function connect() {
  const source = new EventSource("/api/events");
  const conn = $("conn");
  source.onopen = () => { conn.dataset.state = "live"; conn.textContent = "live"; };
  source.onerror = () => { conn.dataset.state = "reconnecting"; conn.textContent = "reconnecting"; };
  const on = (kind, fn) => source.addEventListener(kind, (e) => fn(JSON.parse(e.data)));
  on("run", onRun);
  on("status", onStatus);
  on("step", onStep);
  on("val", (d) => {
    S.val.push([d.step, d.loss]);
    $("stat-val-wrap").hidden = false;
    $("stat-val").textContent = fmt(d.loss);
    scheduleDraw();
  });
  on("samples", (d) => {
    drawSamples(d);
    if (S.view === "inside") refreshInside();
  });
  on("embeddings", onSnapshot);
  on("pace", (d) => setSpeedControl(d.steps_per_s));
  on("sampling", onSampling);
  on("train_error", (d) => showError(d.message));
}

function onRun(state) {
  S.state = state;
  S.losses = [];
  S.avg = [];
  S.val = [];
  S.last = null;
  S.snaps = [];
  S.snapIndex = 0;
  S.follow = true;
  S.graph = null;
  const m = state.model;
  $("info").textContent =
    `engine ${state.engine} · ${state.num_params.toLocaleString()} parameters · ` +
    `${m.n_layer} layer${m.n_layer > 1 ? "s" : ""}, ${m.n_head} heads, n_embd ${m.n_embd}, context ${m.block_size} · ` +
    `vocabulary ${state.vocab_size} (${state.vocab_size - 1} characters + BOS) · ${state.num_docs.toLocaleString()} training names` +
    (state.num_val_docs ? ` (+${state.num_val_docs.toLocaleString()} held out)` : "") +
    ` · ${state.batch_size} name${state.batch_size > 1 ? "s" : ""} per step · seed ${state.seed}`;
  $("samples-temp").textContent = state.temperature;
  $("stat-val-wrap").hidden = !state.num_val_docs;
  $("val-key").hidden = !state.num_val_docs;
  showError(state.can_train ? "" : "Training is off: this checkpoint's training data was not found (or it has no optimizer state); you can still look inside it and sample.");
  setSpeedControl(state.steps_per_s_pace);
  fillSettings(state);
  applyLimits(state.limits);
  onSampling(state.sampling ? { busy: true, ...state.sampling } : { busy: false });
  onStatus({ running: state.running, step: state.step, num_steps: state.num_steps, elapsed_s: state.elapsed_s });
  drawLoss();
  if (S.view === "inside") refreshInside();
  if (S.view === "graph") loadGraph(null);
}

function onStatus(st) {
  const s = S.state;
  if (!s) return;
  s.running = st.running;
  s.step = st.step;
  s.num_steps = st.num_steps;
  document.body.dataset.running = st.running ? "1" : "0";
  const done = st.step >= st.num_steps;
  const play = $("btn-play");
  play.textContent = st.running ? "❚❚ Pause" : "▶ Train";
  play.disabled = !s.can_train || (done && !st.running);
  $("btn-step").disabled = !s.can_train || done;
  $("continue-box").hidden = !(s.can_train && done && !st.running);
  $("stat-step").textContent = st.step;
  $("stat-steps").textContent = st.num_steps;
  if (st.elapsed_s !== undefined) $("stat-elapsed").textContent = `${st.elapsed_s.toFixed(1)} s`;
}

function onStep(d) {
  S.losses.push([d.step, d.loss]);
  const n = S.losses.length, from = Math.max(0, n - MA);
  let sum = 0, k = 0;
  for (let i = from; i < n; i++) if (S.losses[i][1] !== null) { sum += S.losses[i][1]; k++; }
  S.avg.push([d.step, k ? sum / k : null]);
  S.last = d;
  if (S.state) S.state.step = d.step;
  scheduleDraw();
}

let drawPending = false;
function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    drawStats();
    if (S.view === "train") drawLoss();
  });
}

function drawStats() {
  const d = S.last;
  if (!d) {
    for (const id of ["stat-loss", "stat-avg", "stat-lr", "stat-sps", "stat-tps"]) $(id).textContent = "–";
    return;
  }
  $("stat-step").textContent = d.step;
  $("stat-loss").textContent = fmt(d.loss);
  $("stat-avg").textContent = fmt(S.avg[S.avg.length - 1][1]);
  $("stat-lr").textContent = d.lr.toExponential(2);
  $("stat-sps").textContent = d.steps_per_s ? d.steps_per_s.toFixed(d.steps_per_s < 10 ? 1 : 0) : "–";
  $("stat-tps").textContent = d.tokens_per_s ? Math.round(d.tokens_per_s).toLocaleString() : "–";
  $("stat-elapsed").textContent = `${d.elapsed_s.toFixed(1)} s`;
}

// --- the loss chart ----------------------------------------------------------------------------
function drawLoss() {
  const svg = $("loss-chart");
  if (!S.state || svg.closest(".view").hidden) return;
  clear(svg);
  const W = boxWidth("loss-box"), H = W < 560 ? 240 : 320;
  const L = 58, R = 14, T = 12, B = 44;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  const uniform = S.state.uniform_loss;
  const lastStep = S.losses.length ? S.losses[S.losses.length - 1][0] : 0;
  const firstStep = S.losses.length ? S.losses[0][0] - 1 : 0;
  const xs = niceTicks(firstStep, Math.max(S.state.num_steps, lastStep, firstStep + 1), W < 560 ? 4 : 8);
  const x0 = xs.ticks[0], x1 = xs.ticks[xs.ticks.length - 1];
  // the loss axis zooms to the data (and the uniform-guess line), with round ticks
  let lo = uniform, hi = uniform;
  for (const series of [S.losses, S.val]) {
    for (const [, v] of series) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  }
  if (!S.losses.length) { lo = uniform - 1; hi = uniform + 0.5; }
  const ys = niceTicks(lo, hi, H < 300 ? 4 : 6);
  const y0 = ys.ticks[0], y1 = ys.ticks[ys.ticks.length - 1];
  const X = (s) => L + ((W - L - R) * (s - x0)) / (x1 - x0);
  const Y = (v) => T + (H - T - B) * (1 - (v - y0) / (y1 - y0));
  svg.dataset.ymin = String(y0);
  svg.dataset.ymax = String(y1);
  svg.dataset.yticks = ys.ticks.join(",");
  for (const v of ys.ticks) {
    el("svg:line", { x1: L, y1: Y(v), x2: W - R, y2: Y(v), class: "grid" }, svg);
    el("svg:text", { x: L - 6, y: Y(v) + 4, class: "tick", "text-anchor": "end" }, svg, v.toFixed(ys.digits));
  }
  for (const s of xs.ticks) {
    el("svg:line", { x1: X(s), y1: H - B, x2: X(s), y2: H - B + 4, class: "axis" }, svg);
    el("svg:text", { x: X(s), y: H - B + 16, class: "tick", "text-anchor": "middle" }, svg, s.toLocaleString());
  }
  el("svg:line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }, svg);
  el("svg:line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }, svg);
  el("svg:text", { x: (L + W - R) / 2, y: H - 6, class: "axis-title", "text-anchor": "middle" }, svg, "training step");
  el("svg:text", { x: 14, y: (T + H - B) / 2, class: "axis-title", "text-anchor": "middle",
    transform: `rotate(-90 14 ${(T + H - B) / 2})` }, svg, "loss (nats per token)");
  el("svg:line", { x1: L, y1: Y(uniform), x2: W - R, y2: Y(uniform), class: "uniform" }, svg);
  el("svg:text", { x: W - R - 4, y: Y(uniform) - 5, class: "tick", "text-anchor": "end" }, svg,
    `ln ${S.state.vocab_size} = ${uniform.toFixed(2)}`);
  const stride = Math.max(1, Math.floor(S.losses.length / 4000)); // a long run: every k-th step
  const line = (series, cls) => {
    const pts = [];
    for (let i = 0; i < series.length; i += (cls === "val" ? 1 : stride)) {
      const [s, v] = series[i];
      if (v !== null) pts.push(`${X(s).toFixed(1)},${Y(v).toFixed(1)}`);
    }
    if (pts.length) el("svg:polyline", { points: pts.join(" "), class: cls }, svg);
  };
  line(S.losses, "loss");
  line(S.avg, "avg");
  line(S.val, "val");
  for (const [s, v] of S.val) if (v !== null) el("svg:circle", { cx: X(s), cy: Y(v), r: 3, class: "valdot" }, svg);
  svg.dataset.steps = String(S.losses.length);
  if (S.losses.length) svg.dataset.lastLoss = String(S.losses[S.losses.length - 1][1]);
}

// --- samples --------------------------------------------------------------------------------
function sampleItem(list, s) {
  const li = el("li", { class: sampleClass(s) }, list, s.text || "(empty)");
  if (s.text) {
    li.title = "look inside this name";
    li.addEventListener("click", () => { setWord(s.text, 0); showView("inside"); });
  }
  return li;
}

function drawSamples(d) {
  const list = $("samples");
  clear(list);
  list.dataset.step = String(d.step);
  $("samples-step").textContent = `at step ${d.step}`;
  for (const s of d.samples) sampleItem(list, s);
}

// novel: not a training document; seen: one; null: unknown (no fingerprint)
function sampleClass(s) {
  return s.novel === null ? "" : s.novel ? "novel" : "seen";
}

// --- pace and settings ----------------------------------------------------------------------
function setSpeedControl(stepsPerS) {
  let i = SPEEDS.indexOf(stepsPerS);
  if (i < 0) i = SPEEDS.length - 1;
  $("speed").value = String(i);
  $("speed-value").textContent = stepsPerS === null || stepsPerS === undefined ? "full" : `${stepsPerS} steps/s`;
  document.body.dataset.pace = stepsPerS === null || stepsPerS === undefined ? "full" : String(stepsPerS);
}

const SETTINGS = ["steps", "learning_rate", "n_embd", "n_layer", "n_head", "block_size", "seed"];

function fillSettings(state) {
  for (const key of SETTINGS) {
    const input = $(`set-${key}`);
    input.value = String(state.settings[key]);
    input.disabled = !state.editable && key !== "steps";
  }
  $("settings-note").textContent = state.editable
    ? "Changing the size changes the number of parameters; the learning rate is Adam's at step 0 (it decays linearly to 0 at the last step)."
    : "This run was opened from a checkpoint: only its number of steps can change.";
}

function applyLimits(limits) {
  const set = (id, f) => {
    if (!f) return;
    if (f.low !== null) $(id).min = f.low;
    if (f.high !== null) $(id).max = f.high;
  };
  for (const key of SETTINGS) set(`set-${key}`, limits.settings[key]);
  set("s-count", limits.sample.count);
  set("s-temp", limits.sample.temperature);
  set("s-topk", limits.sample.top_k);
  set("s-min", limits.sample.min_length);
  set("s-max", limits.sample.max_length);
  set("more-steps", limits.continue.steps);
  $("s-prompt").maxLength = limits.sample.prompt.high;
  $("word").maxLength = limits.inspect.text.high;
  $("graph-word").maxLength = limits.inspect.text.high;
}

function numberOrNull(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

let applyCount = 0; // the latest Apply speaks: an earlier one's late answer says nothing

async function applySettings(event) {
  event.preventDefault();
  const body = {};
  for (const key of SETTINGS) body[key] = numberOrNull(`set-${key}`);
  const mine = ++applyCount;
  try {
    await api("/api/settings", body);
    if (mine !== applyCount) return;
    $("settings-note").textContent = "Applied: a new run from step 0.";
    showError("");
  } catch (err) {
    if (mine !== applyCount) return;
    $("settings-note").textContent = err.message;
    showError(err.message);
  }
}

// --- the selected (word, position) ---------------------------------------------------------
function setWord(word, t) {
  S.sel = { word, t };
  $("word").value = word;
  $("graph-word").value = word;
  S.graph = null;
  document.body.dataset.selected = `${word}@${t}`;
  if (S.view === "inside") refreshInside();
  if (S.view === "graph") loadGraph(null);
}

function selectPosition(t) {
  S.sel.t = t;
  document.body.dataset.selected = `${S.sel.word}@${t}`;
  if (S.inside) showSelection(S.inside);
  drawTokens("graph-tokens", S.inside ? S.inside : null);
  if (S.snaps.length) drawEmbeddings();
  if (S.view === "graph") loadGraph(null);
}

function drawTokens(boxId, d) {
  const box = $(boxId);
  clear(box);
  if (!d) return;
  d.inputs.forEach((tok, t) => {
    const b = el("button", { class: t === S.sel.t ? "pos active" : "pos", "data-t": t,
      title: `position ${t}: reads ${tokText(tok)}, should predict ${tokText(d.targets[t])}` }, box,
    `${t}: ${tok} → ${d.targets[t]}`);
    b.addEventListener("click", () => selectPosition(t));
  });
}

// --- look inside ------------------------------------------------------------------------------
let insideTimer = null;
function refreshInside() {
  clearTimeout(insideTimer);
  insideTimer = setTimeout(loadInside, 120);
}

async function loadInside() {
  const text = S.sel.word;
  const temperature = Number($("temp").value);
  $("temp-value").textContent = temperature.toFixed(2);
  try {
    const d = await api("/api/inspect", { text, temperature });
    if (text !== S.sel.word) return;
    S.inside = d;
    if (S.sel.t >= d.inputs.length) S.sel.t = d.inputs.length - 1;
    const via = S.state && d.attention_engine !== S.state.engine
      ? ` · attention from the ${d.attention_engine} engine on the same weights` : "";
    $("inside-status").textContent = `at step ${d.step} · mean loss ${fmt(d.loss)} nats${via}`;
    $("word").classList.remove("bad");
    const cut = $("cut-notice");
    cut.hidden = !d.cut;
    if (d.cut) {
      cut.textContent = `"${d.word}" is longer than the context: the model reads ${d.context} positions ` +
        `(BOS and the first ${d.context - 1} characters) and predicts the next ${d.context}; the rest is cut, ` +
        "as training cuts a long name.";
    }
    drawTokens("tokens", d);
    drawTokens("graph-tokens", d);
    drawHeatmaps(d);
    drawProbs(d);
    drawPosLoss(d);
    showSelection(d);
    document.body.dataset.inside = d.text + "@" + d.temperature;
  } catch (err) {
    $("word").classList.add("bad");
    $("inside-status").textContent = err.message;
  }
}

function showSelection(d) {
  const t = S.sel.t;
  document.body.dataset.selected = `${S.sel.word}@${t}`;
  for (const b of document.querySelectorAll("button.pos")) b.classList.toggle("active", Number(b.dataset.t) === t);
  const box = $("selected");
  clear(box);
  const read = d.inputs.slice(0, t + 1).map((x) => (x === "BOS" ? "" : x)).join("");
  el("div", {}, box, `Position ${t}: after reading BOS${read ? ` + "${read}"` : ""}, the right next character is ` +
    `${tokText(d.targets[t])} (loss ${fmt(d.losses[t], 3)} nats). The 5 most likely next characters ` +
    `at temperature ${d.temperature}:`);
  const top = el("div", { class: "top", id: "top5", "data-t": t }, box);
  for (const [tok, p] of d.top[t]) {
    el("span", { class: tok === d.targets[t] ? "target" : "", "data-token": tok, "data-p": String(p) }, top,
      `${tokText(tok)} ${pct(p)}`);
  }
  // the selected row in every heatmap, every probability row and loss bar
  for (const svg of document.querySelectorAll("svg.attn")) {
    const old = svg.querySelector("rect.rowsel");
    if (old) old.remove();
    const first = svg.querySelector(`rect.cell[data-t='${t}'][data-s='0']`);
    if (first) {
      const cell = Number(svg.dataset.cell), pad = Number(svg.dataset.pad);
      el("svg:rect", { class: "rowsel", x: pad - 1, y: Number(first.getAttribute("y")) - 1,
        width: (t + 1) * cell + 1, height: cell + 1 }, svg);
    }
    for (const c of svg.querySelectorAll("rect.cell")) c.classList.toggle("sel", Number(c.dataset.t) === t && !c.classList.contains("masked"));
    const reads = svg.parentElement.querySelector(".reads");
    const li = Number(svg.dataset.layer), h = Number(svg.dataset.head);
    const row = d.attention[li][h][t];
    reads.textContent = `${tokText(d.inputs[t])}@${t} reads: ` +
      row.map((w, s) => `${d.inputs[s]}@${s} ${pct(w, 0)}`).join(" · ");
  }
  for (const r of document.querySelectorAll(".prob-row")) r.classList.toggle("sel", Number(r.dataset.t) === t);
  for (const b of document.querySelectorAll("rect.lossbar")) b.classList.toggle("sel", Number(b.dataset.t) === t);
}

function heatColor(w) {
  // 0 -> near white, 1 -> deep blue (the scale above the heatmaps)
  const r = Math.round(247 - 200 * w), g = Math.round(250 - 160 * w), b = Math.round(255 - 60 * w);
  return `rgb(${r},${g},${b})`;
}

function drawHeatmaps(d) {
  const box = $("heatmaps");
  clear(box);
  const scale = $("attn-scale");
  clear(scale);
  el("span", {}, scale, "0");
  el("span", { class: "bar" }, scale);
  el("span", {}, scale, "1 (all attention on one position)");
  const n = d.inputs.length, padL = 56, padT = 46;
  const avail = boxWidth("heatmaps", 200);
  const heads = d.attention.length * d.attention[0].length;
  const perRow = avail > 900 && heads > 1 ? 2 : 1;
  const cell = Math.max(14, Math.min(32, Math.floor((avail / perRow - padL - 24) / n)));
  d.attention.forEach((layer, li) => {
    layer.forEach((rows, h) => {
      const fig = el("figure", { class: "heatmap" }, box);
      el("figcaption", {}, fig, `layer ${li} · head ${h}`);
      const W = padL + n * cell + 4, H = padT + n * cell + 4;
      const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "attn",
        "data-layer": li, "data-head": h, "data-cell": cell, "data-pad": padL }, fig);
      el("svg:text", { x: padL + (n * cell) / 2, y: 12, class: "axis-title", "text-anchor": "middle" }, svg,
        "key: position read →");
      el("svg:text", { x: 12, y: padT + (n * cell) / 2, class: "axis-title", "text-anchor": "middle",
        transform: `rotate(-90 12 ${padT + (n * cell) / 2})` }, svg, "query: position reading →");
      for (let t = 0; t < n; t++) {
        el("svg:text", { x: padL - 5, y: padT + t * cell + cell / 2 + 4, class: "tick", "text-anchor": "end" }, svg,
          d.inputs[t]);
        el("svg:text", { x: padL + t * cell + cell / 2, y: padT - 8, class: "tick", "text-anchor": "middle" }, svg,
          d.inputs[t] === "BOS" && cell < 26 ? "B" : d.inputs[t]);
        for (let s = 0; s < n; s++) {
          const attrs = { x: padL + s * cell, y: padT + t * cell, width: cell - 1, height: cell - 1,
            "data-t": t, "data-s": s };
          if (s <= t) {
            const w = rows[t][s];
            attrs.class = "cell";
            attrs["data-w"] = String(w);
            attrs.fill = heatColor(w);
            const rect = el("svg:rect", attrs, svg);
            el("svg:title", {}, rect, `${d.inputs[t]}@${t} reads ${d.inputs[s]}@${s}: ${w.toFixed(4)}`);
            rect.addEventListener("click", () => selectPosition(t));
            if (cell >= 24) {
              el("svg:text", { x: padL + s * cell + cell / 2, y: padT + t * cell + cell / 2 + 4,
                class: "cellval", "text-anchor": "middle", fill: w > 0.55 ? "#fff" : "#1f2937" }, svg,
              String(Math.round(100 * w)));
            }
          } else {
            attrs.class = "cell masked";
            el("svg:rect", attrs, svg);
          }
        }
      }
      el("div", { class: "reads" }, fig);
    });
  });
  el("p", { class: "muted small" }, box, cell >= 24 ? "numbers in the cells: attention in %" :
    "the selected row's attention, in %, is written under each map");
}

function drawProbs(d) {
  const box = $("probs");
  clear(box);
  const V = d.vocab.length, H = 74, axis = 30, top = 8;
  const wide = box.clientWidth > 560;
  const W = Math.max(220, Math.floor(box.clientWidth - (wide ? 124 : 8)));
  const bw = (W - axis - 4) / V;
  const every = bw >= 8 ? 1 : bw >= 4 ? 2 : 4;
  d.probs.forEach((row, t) => {
    const line = el("div", { class: "prob-row", "data-t": t }, box);
    line.addEventListener("click", () => selectPosition(t));
    const label = el("div", { class: "prob-label" }, line);
    el("span", { class: "tok" }, label, `${t}: ${d.inputs[t]}`);
    el("span", { class: "muted" }, label, " → ");
    el("span", { class: "tok target" }, label, d.targets[t]);
    const target = d.vocab.indexOf(d.targets[t]);
    el("div", { class: "small" }, label, `p = ${pct(row[target])}`);
    const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H + top + 16}`, width: W, height: H + top + 16,
      class: "bars", "data-t": t, "data-argmax": d.argmax[t] }, line);
    for (const [v, txt] of [[0, "0"], [0.5, ".5"], [1, "1"]]) {
      const y = top + H * (1 - v);
      el("svg:line", { x1: axis, y1: y, x2: W, y2: y, class: "grid" }, svg);
      el("svg:text", { x: axis - 4, y: y + 4, class: "tick", "text-anchor": "end" }, svg, txt);
    }
    row.forEach((p, i) => {
      const h = Math.max(p * H, 0.5);
      let cls = "bar";
      if (i === target) cls += " target";
      if (i === d.argmax[t]) cls += " argmax";
      const rect = el("svg:rect", { x: axis + i * bw + 0.5, y: top + H - h, width: Math.max(bw - 1, 1), height: h,
        class: cls, "data-p": String(p), "data-token": d.vocab[i] }, svg);
      el("svg:title", {}, rect, `${d.vocab[i]}: ${p.toFixed(4)}`);
      if (i % every === 0) {
        el("svg:text", { x: axis + i * bw + bw / 2, y: top + H + 13, class: "tick", "text-anchor": "middle" },
          svg, d.vocab[i] === "BOS" ? "⏎" : d.vocab[i]);
      }
    });
  });
  el("p", { class: "muted small" }, box, "⏎ is BOS: the end of the name. Bar height: probability, 0 to 1.");
}

function drawPosLoss(d) {
  const svg = $("pos-loss");
  clear(svg);
  const W = boxWidth("pos-loss-box", 220), H = 230, L = 40, B = 40, T = 20, n = d.losses.length;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  const uniform = S.state ? S.state.uniform_loss : 3.3;
  let hi = uniform;
  for (const v of d.losses) if (v !== null) hi = Math.max(hi, v);
  const ys = niceTicks(0, hi, 4);
  const ymax = ys.ticks[ys.ticks.length - 1];
  const bw = (W - L - 4) / n;
  const y = (v) => T + (H - B - T) * (1 - v / ymax);
  for (const v of ys.ticks) {
    el("svg:line", { x1: L, y1: y(v), x2: W, y2: y(v), class: "grid" }, svg);
    el("svg:text", { x: L - 4, y: y(v) + 4, class: "tick", "text-anchor": "end" }, svg, v.toFixed(ys.digits));
  }
  el("svg:text", { x: 12, y: (T + H - B) / 2, class: "axis-title", "text-anchor": "middle",
    transform: `rotate(-90 12 ${(T + H - B) / 2})` }, svg, "nats");
  el("svg:line", { x1: L, y1: y(uniform), x2: W, y2: y(uniform), class: "uniform" }, svg);
  d.losses.forEach((v, t) => {
    const top = y(v === null ? ymax : v);
    const bar = el("svg:rect", { x: L + t * bw + 2, y: top, width: Math.max(bw - 4, 1), height: H - B - top,
      class: "lossbar", "data-loss": String(v), "data-t": t }, svg);
    bar.addEventListener("click", () => selectPosition(t));
    el("svg:text", { x: L + t * bw + bw / 2, y: H - B + 14, class: "tick", "text-anchor": "middle" },
      svg, d.targets[t] === "BOS" ? "⏎" : d.targets[t]);
    if (bw >= 26) {
      el("svg:text", { x: L + t * bw + bw / 2, y: top - 4, class: "tick", "text-anchor": "middle" }, svg, fmt(v, 2));
    }
  });
  el("svg:text", { x: (L + W) / 2, y: H - 6, class: "axis-title", "text-anchor": "middle" }, svg,
    "character predicted");
}

// --- embeddings over training -----------------------------------------------------------------
function onSnapshot(d) {
  S.snaps.push(d);
  if (S.snaps.length > 2000) S.snaps.shift();
  const slider = $("emb-slider");
  slider.max = String(S.snaps.length - 1);
  if (S.follow) S.snapIndex = S.snaps.length - 1;
  slider.value = String(S.snapIndex);
  if (S.view === "embeddings") drawEmbeddings();
}

let replayTimer = null;
function replay() {
  if (replayTimer) { stopReplay(); return; }
  if (S.snaps.length < 2) return;
  S.snapIndex = 0;
  S.follow = false;
  $("emb-play").textContent = "❚❚ Stop";
  replayTimer = setInterval(() => {
    S.snapIndex = Math.min(S.snapIndex + 1, S.snaps.length - 1);
    $("emb-slider").value = String(S.snapIndex);
    if (S.snapIndex === S.snaps.length - 1) { S.follow = true; stopReplay(); }
    drawEmbeddings();
  }, 250);
  $("emb-slider").value = "0";
  drawEmbeddings();
}

function stopReplay() {
  clearInterval(replayTimer);
  replayTimer = null;
  $("emb-play").textContent = "▶ Replay";
}

// Place each label next to its point without overlapping another label or point: try
// positions on growing rings around the point; a label set away from its point gets a line.
function placeLabels(points, labels, W, H, box) {
  const charW = 8.2, lh = 15, placed = [];
  const overlaps = (r) => placed.some((q) => r.x < q.x + q.w && q.x < r.x + r.w && r.y < q.y + q.h && q.y < r.y + r.h)
    || points.some(([px, py]) => px + 5 > r.x && px - 5 < r.x + r.w && py + 5 > r.y && py - 5 < r.y + r.h);
  const order = points.map((_, i) => i).sort((a, b) => points[a][0] - points[b][0]);
  const out = new Array(points.length);
  for (const i of order) {
    const [px, py] = points[i];
    const w = labels[i].length * charW + 4, h = lh;
    let best = null;
    for (let ring = 0; ring < 40 && !best; ring++) {
      const rad = 7 + ring * 6;
      const tries = ring === 0 ? [[rad, -h / 2], [-rad - w, -h / 2], [-w / 2, -rad - h], [-w / 2, rad]] : [];
      for (let k = 0; k < 16 && ring > 0; k++) {
        const a = (Math.PI * 2 * k) / 16;
        tries.push([rad * Math.cos(a) - w / 2, rad * Math.sin(a) - h / 2]);
      }
      for (const [dx, dy] of tries) {
        const r = { x: px + dx, y: py + dy, w, h };
        if (r.x < box.x0 || r.y < box.y0 || r.x + w > box.x1 || r.y + h > box.y1) continue;
        if (!overlaps(r)) { best = { ...r, far: ring > 1 }; break; }
      }
    }
    if (!best) best = { x: px + 6, y: py - h / 2, w, h, far: false }; // nowhere free: beside it
    placed.push(best);
    out[i] = best;
  }
  return out;
}

function drawEmbeddings() {
  const svg = $("emb-chart");
  if (!S.snaps.length || svg.closest(".view").hidden) return;
  const d = S.snaps[Math.min(S.snapIndex, S.snaps.length - 1)];
  clear(svg);
  const W = boxWidth("emb-box"), H = Math.max(300, Math.min(520, Math.round(W * 0.68)));
  const L = 50, B = 42, T = 10, R = 10;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  let lo0 = Infinity, hi0 = -Infinity, lo1 = Infinity, hi1 = -Infinity;
  for (const [a, b] of d.points) { lo0 = Math.min(lo0, a); hi0 = Math.max(hi0, a); lo1 = Math.min(lo1, b); hi1 = Math.max(hi1, b); }
  const xs = niceTicks(lo0, hi0, W < 500 ? 4 : 6), ys = niceTicks(lo1, hi1, 5);
  const x0 = xs.ticks[0], x1 = xs.ticks[xs.ticks.length - 1], y0 = ys.ticks[0], y1 = ys.ticks[ys.ticks.length - 1];
  const pad = 24; // room for the labels inside the axes
  const X = (v) => L + pad + ((W - L - R - 2 * pad) * (v - x0)) / (x1 - x0);
  const Y = (v) => T + pad + (H - T - B - 2 * pad) * (1 - (v - y0) / (y1 - y0));
  for (const v of xs.ticks) {
    el("svg:line", { x1: X(v), y1: T, x2: X(v), y2: H - B, class: "grid" }, svg);
    el("svg:text", { x: X(v), y: H - B + 15, class: "tick", "text-anchor": "middle" }, svg, v.toFixed(xs.digits));
  }
  for (const v of ys.ticks) {
    el("svg:line", { x1: L, y1: Y(v), x2: W - R, y2: Y(v), class: "grid" }, svg);
    el("svg:text", { x: L - 5, y: Y(v) + 4, class: "tick", "text-anchor": "end" }, svg, v.toFixed(ys.digits));
  }
  el("svg:text", { x: (L + W) / 2, y: H - 6, class: "axis-title", "text-anchor": "middle" }, svg,
    `first principal component (${pct(d.explained[0], 0)} of the variance)`);
  el("svg:text", { x: 12, y: (T + H - B) / 2, class: "axis-title", "text-anchor": "middle",
    transform: `rotate(-90 12 ${(T + H - B) / 2})` }, svg, `second (${pct(d.explained[1], 0)})`);
  const pts = d.points.map(([a, b]) => [X(a), Y(b)]);
  const selTok = S.inside && S.inside.inputs[S.sel.t];
  const spots = placeLabels(pts, d.labels, W, H, { x0: L + 2, y0: T, x1: W - R, y1: H - B });
  d.points.forEach(([a, b], i) => {
    const label = d.labels[i];
    const [px, py] = pts[i];
    const spot = spots[i];
    if (spot.far) {
      el("svg:line", { x1: px, y1: py, x2: spot.x + spot.w / 2, y2: spot.y + spot.h / 2, class: "leader" }, svg);
    }
    let cls = "aeiouy".includes(label) ? "pt vowel" : label === "BOS" ? "pt bos" : "pt";
    if (label === selTok) cls += " sel";
    el("svg:circle", { cx: px, cy: py, r: 4, class: cls, "data-token": label, "data-x": String(a), "data-y": String(b) }, svg);
  });
  d.points.forEach((_, i) => {
    const spot = spots[i];
    el("svg:text", { x: spot.x + 2, y: spot.y + spot.h - 4, class: "emb-label", "data-token": d.labels[i] }, svg, d.labels[i]);
  });
  $("emb-info").textContent = `at step ${d.step}`;
  $("emb-step").textContent = `step ${d.step} (${S.snapIndex + 1} of ${S.snaps.length})`;
  svg.dataset.step = String(d.step);
}

// --- the autograd graph ----------------------------------------------------------------------
let graphSeq = 0;
async function loadGraph(focus) {
  const text = S.sel.word, position = S.sel.t, seq = ++graphSeq;
  if (!S.inside || S.inside.word !== text) { refreshInside(); }
  try {
    const d = await api("/api/graph", { text, position, focus });
    if (seq !== graphSeq) return;
    S.graph = d;
    $("graph-word").classList.remove("bad");
    drawGraph(d);
    const shown = d.summary.shown.toLocaleString(), all = d.summary.nodes.toLocaleString();
    $("graph-status").textContent = `at step ${d.step} · loss at position ${position} = ${fmt(d.summary.loss)}`;
    $("graph-count").textContent = `${all} Values; ${shown} shown once the ${d.summary.folded.toLocaleString()} partial sums fold into Σ nodes`;
    document.body.dataset.graph = `${text}@${position}#${d.focus}`;
  } catch (err) {
    if (seq !== graphSeq) return;
    $("graph-word").classList.add("bad");
    $("graph-status").textContent = err.message;
  }
}

function nodeBox(parent, node, cls, maxGrad) {
  const b = el("button", { class: `gnode op-${node.op === "weight" ? "weight" : node.op === "constant" ? "constant" : "op"} ${cls}`,
    "data-id": node.id, "data-op": node.op, "data-value": String(node.data), "data-grad": String(node.grad),
    title: "focus this node" }, parent);
  el("span", { class: "gname" }, b, node.name);
  if (node.formula) el("span", { class: "gform" }, b, node.formula);
  el("span", { class: "gval" }, b, `value ${sig(node.data)} · grad ${sig(node.grad)}`);
  const share = maxGrad > 0 ? Math.sqrt(Math.abs(node.grad || 0) / maxGrad) : 0;
  el("span", { class: "gbar" }, b).style.width = `${(100 * share).toFixed(1)}%`; // CSSOM: allowed by the CSP
  b.style.borderColor = `rgba(220, 38, 38, ${(0.25 + 0.75 * share).toFixed(2)})`;
  b.addEventListener("click", () => loadGraph(node.id));
  return b;
}

function drawGraph(d) {
  const box = $("graph");
  for (const c of [...box.children]) if (c.id !== "graph-edges") c.remove();
  const nodes = new Map(d.nodes.map((n) => [n.id, n]));
  const focus = nodes.get(d.focus);
  const second = [];
  for (const c of d.inputs) for (const g of d.second[String(c)] || []) if (!second.includes(g)) second.push(g);
  const shown = [focus, ...d.inputs.map((i) => nodes.get(i)), ...d.used_by.map((i) => nodes.get(i)), ...second.map((i) => nodes.get(i))];
  const maxGrad = Math.max(...shown.map((n) => Math.abs(n.grad || 0)));
  const column = (cls, title) => {
    const col = el("div", { class: `gcol ${cls}` }, box);
    el("h3", {}, col, title);
    return col;
  };
  const cSecond = column("second", "their inputs");
  const cInputs = column("inputs", d.inputs.length ? "made of" : "a leaf: made of nothing");
  const cFocus = column("focus", "this node");
  const cUsed = column("used", d.used_by.length ? "used by" : "the loss: used by nothing");
  const boxes = new Map();
  for (const g of second) boxes.set(`s${g}`, nodeBox(cSecond, nodes.get(g), "", maxGrad));
  for (const i of d.inputs) boxes.set(`i${i}`, nodeBox(cInputs, nodes.get(i), "", maxGrad));
  if (d.inputs_total > d.inputs.length) {
    el("div", { class: "more" }, cInputs, `${d.inputs.length} of ${d.inputs_total} terms: the largest gradients`);
  }
  const fbox = nodeBox(cFocus, focus, "focus", maxGrad);
  boxes.set(`f${focus.id}`, fbox);
  for (const u of d.used_by) boxes.set(`u${u}`, nodeBox(cUsed, nodes.get(u), "", maxGrad));
  if (d.used_by_total > d.used_by.length) el("div", { class: "more" }, cUsed, `and ${d.used_by_total - d.used_by.length} more`);
  if (!second.length) cSecond.remove();
  box.style.gridTemplateColumns = second.length ? "" : "repeat(3, minmax(0, 1fr))";
  // the path from the loss
  const path = $("graph-path");
  clear(path);
  el("span", { class: "muted" }, path, "from the loss:");
  d.path.forEach((id, k) => {
    if (k) el("span", { class: "sep" }, path, "←");
    const b = el("button", { "data-id": id }, path, nodes.get(id).name);
    b.addEventListener("click", () => loadGraph(id));
  });
  drawGraphDetail(d, focus);
  drawGraphSummary(d.summary);
  requestAnimationFrame(() => {
    drawEdges(d, nodes, boxes);
    // keep the node just clicked in view
    const r = fbox.getBoundingClientRect();
    if (r.top < 0 || r.bottom > window.innerHeight) fbox.scrollIntoView({ block: "center" });
  });
}

function drawEdges(d, nodes, boxes) {
  const box = $("graph"), svg = $("graph-edges");
  clear(svg);
  const W = box.scrollWidth, H = box.scrollHeight;
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const origin = box.getBoundingClientRect();
  const edges = [];
  const add = (childKey, parentKey, flow) => {
    const a = boxes.get(childKey), b = boxes.get(parentKey);
    const shown = (x) => x && x.offsetParent !== null; // a column a phone hides has no box
    if (shown(a) && shown(b)) edges.push([a, b, Math.abs(flow || 0)]);
  };
  const focus = nodes.get(d.focus);
  focus.children.forEach((c, k) => add(`i${c}`, `f${d.focus}`, focus.flows[k]));
  for (const c of d.inputs) {
    const n = nodes.get(c);
    n.children.forEach((g, k) => add(`s${g}`, `i${c}`, n.flows[k]));
  }
  for (const u of d.used_by) {
    const n = nodes.get(u);
    const k = n.children.indexOf(d.focus);
    add(`f${d.focus}`, `u${u}`, n.flows[k]);
  }
  const maxFlow = Math.max(1e-300, ...edges.map((e) => e[2]));
  for (const [a, b, flow] of edges) {
    const ra = a.getBoundingClientRect(), rb = b.getBoundingClientRect();
    let p;
    if (rb.left > ra.right) { // side by side: from the input's right edge to the user's left edge
      const x1 = ra.right - origin.left, y1 = ra.top + ra.height / 2 - origin.top;
      const x2 = rb.left - origin.left, y2 = rb.top + rb.height / 2 - origin.top;
      p = `M${x1},${y1} C${(x1 + x2) / 2},${y1} ${(x1 + x2) / 2},${y2} ${x2},${y2}`;
    } else { // stacked (a phone): from the input's top to the user's bottom
      const x1 = ra.left + ra.width / 2 - origin.left, y1 = ra.top - origin.top;
      const x2 = rb.left + rb.width / 2 - origin.left, y2 = rb.bottom - origin.top;
      p = `M${x1},${y1} C${x1},${(y1 + y2) / 2} ${x2},${(y1 + y2) / 2} ${x2},${y2}`;
    }
    el("svg:path", { d: p, class: "edge", "stroke-width": (1 + 5 * Math.sqrt(flow / maxFlow)).toFixed(2),
      "data-flow": String(flow) }, svg);
  }
}

function drawGraphDetail(d, node) {
  const box = $("graph-detail");
  clear(box);
  el("div", {}, box).append(
    el("b", {}, null, node.name),
    document.createTextNode(node.formula ? ` = ${node.formula}` : ""),
  );
  el("div", {}, box, `value ${node.data} · gradient ${node.grad}: the loss at this position changes by about ` +
    `${sig(node.grad)} × Δ when this value changes by a small Δ.`);
  const a = d.adam;
  if (!a) return;
  el("div", { class: "muted" }, box, `Adam's update of ${a.weight} if the next step (t = ${a.t}, lr = ${sig(a.lr)}) ` +
    "trained on this position alone (a real step averages the gradient over every position of a name):");
  const table = el("table", { id: "adam" }, box);
  const rows = [
    ["gradient g", a.grad],
    [`m = ${a.beta1}·m + (1 − ${a.beta1})·g`, `${sig(a.m)} → ${sig(a.m_new)}`],
    [`v = ${a.beta2}·v + (1 − ${a.beta2})·g²`, `${sig(a.v)} → ${sig(a.v_new)}`],
    [`m̂ = m / (1 − ${a.beta1}^${a.t}),  v̂ = v / (1 − ${a.beta2}^${a.t})`, `${sig(a.m_hat)},  ${sig(a.v_hat)}`],
    ["update = −lr · m̂ / (√v̂ + ε)", a.update],
    ["the weight", `${sig(a.data)} → ${sig(a.new)}`],
  ];
  for (const [k, v] of rows) {
    const tr = el("tr", {}, table);
    el("td", {}, tr, k);
    el("td", { class: "num" }, tr, typeof v === "number" ? sig(v) : v);
  }
  table.dataset.new = String(a.new);
}

function drawGraphSummary(summary) {
  const ops = $("graph-ops");
  clear(ops);
  const head = el("tr", {}, ops);
  for (const h of ["operation", "what it computes", "Values"]) el("th", {}, head, h);
  for (const [op, count, meaning] of summary.ops) {
    const tr = el("tr", {}, ops);
    el("td", { class: "mono" }, tr, op);
    el("td", {}, tr, meaning);
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

// --- sample ----------------------------------------------------------------------------------
function onSampling(d) {
  S.sampling = d.busy;
  document.body.dataset.sampling = d.busy ? "1" : "0";
  $("btn-sample").disabled = d.busy;
  $("btn-cancel").hidden = !d.busy;
  $("sample-status").textContent = d.busy
    ? `drawing… ${d.found || 0} of ${d.wanted || "?"} found in ${d.tries || 0} tries` : "";
}

async function runSample(event) {
  event.preventDefault();
  const body = {
    prompt: $("s-prompt").value,
    temperature: Number($("s-temp").value),
    top_k: numberOrNull("s-topk"),
    count: Number($("s-count").value),
    novel: $("s-novel").checked,
    min_length: numberOrNull("s-min"),
    max_length: numberOrNull("s-max"),
  };
  const list = $("sample-list");
  onSampling({ busy: true, found: 0, wanted: body.count, tries: 0 });
  try {
    const d = await api("/api/sample", body);
    clear(list);
    for (const s of d.samples) sampleItem(list, s);
    const table = $("sample-report");
    clear(table);
    // report.make_report's numbers, as `microgpt sample --report` prints them
    const r = d.report;
    const rejected = Object.entries(r.rejected).map(([why, n]) => `${n} ${why}`).join(", ");
    const trainLen = r.train_mean_length === null ? "" : ` (training: ${fmt(r.train_mean_length, 2)})`;
    const rows = [
      ["at step", d.step],
      ["samples", `${r.count} of ${r.drawn} tries` + (rejected ? ` (rejected: ${rejected})` : "") + (d.cancelled ? " · cancelled" : "")],
      ["novel", r.novel === null ? "unknown" : `${r.novel} (${pct(r.novel_share)})`],
      ["unique", `${r.unique} (duplicates ${pct(r.duplicates)})`],
      ["mean length", fmt(r.mean_length, 2) + trainLen],
      ["log-prob / char", `${fmt(r.logprob_per_char, 4)} nats (at T = 1)`],
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
  } finally {
    onSampling({ busy: false });
  }
}

// --- wiring ------------------------------------------------------------------------------------
function init() {
  for (const button of document.querySelectorAll("#tabs button")) {
    button.addEventListener("click", () => showView(button.dataset.view));
  }
  const post = (path, body) => async () => {
    try { onStatus(await api(path, body())); showError(""); } catch (err) { showError(err.message); }
  };
  $("btn-play").addEventListener("click", () =>
    post("/api/train", () => ({ action: S.state && S.state.running ? "stop" : "start" }))());
  $("btn-step").addEventListener("click", post("/api/train", () => ({ action: "step" })));
  $("btn-reset").addEventListener("click", post("/api/train", () => ({ action: "reset" })));
  $("btn-continue").addEventListener("click", post("/api/continue", () => ({ steps: Number($("more-steps").value) })));
  $("speed").addEventListener("input", () => {
    const pace = SPEEDS[Number($("speed").value)];
    setSpeedControl(pace);
    api("/api/pace", { steps_per_s: pace }).catch((err) => showError(err.message));
  });
  $("settings-form").addEventListener("submit", applySettings);
  const wordInput = (id) => $(id).addEventListener("input", () => setWord($(id).value, 0));
  wordInput("word");
  wordInput("graph-word");
  $("temp").addEventListener("input", refreshInside);
  $("emb-slider").addEventListener("input", () => {
    stopReplay();
    S.snapIndex = Number($("emb-slider").value);
    S.follow = S.snapIndex === S.snaps.length - 1;
    drawEmbeddings();
  });
  $("emb-play").addEventListener("click", replay);
  $("sample-form").addEventListener("submit", runSample);
  $("btn-cancel").addEventListener("click", () => api("/api/sample/cancel", {}).catch((err) => showError(err.message)));
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      drawLoss();
      if (S.inside && S.view === "inside") { drawHeatmaps(S.inside); drawProbs(S.inside); drawPosLoss(S.inside); showSelection(S.inside); }
      drawEmbeddings();
      if (S.graph && S.view === "graph") drawGraph(S.graph);
    }, 150);
  });
  document.body.dataset.selected = `${S.sel.word}@${S.sel.t}`;
  connect();
}

document.addEventListener("DOMContentLoaded", init);
