// The dashboard: polls /dashboard/api/stats (cumulative counters and histogram buckets) and
// /dashboard/api/models, and computes rates and percentiles here from the deltas between two
// polls, so the server keeps no history. Actions use the ordinary v2 routes. Every value from
// the server is put into the page as text (textContent), never as HTML.
"use strict";
(() => {
  const params = new URLSearchParams(location.search);
  const POLL_MS = Math.max(100, Number(params.get("poll")) || 1000);
  const MODELS_EVERY = Math.max(1, Math.round(2000 / POLL_MS)); // the model list changes rarely
  const KEEP = 120;                                               // points per live chart
  const TOKEN_KEY = "engine-serve-token";
  if (params.get("theme")) document.documentElement.dataset.theme = params.get("theme");

  const $ = (sel, root = document) => root.querySelector(sel);
  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  function el(tag, attrs = {}, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  }
  const fill = (parent, ...kids) => parent.replaceChildren(...kids.filter((k) => k != null));

  // -- the token and the API ------------------------------------------------------------

  let token = sessionStorage.getItem(TOKEN_KEY);
  class AuthNeeded extends Error {}

  async function call(path, opts = {}) {
    const headers = Object.assign({}, opts.headers || {});
    if (token) headers.Authorization = "Bearer " + token;
    const r = await fetch(path, Object.assign({}, opts, { headers, cache: "no-store" }));
    if (r.status === 401) { askToken(); throw new AuthNeeded(); }
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    return body;
  }
  const post = (path, body) => call(path, { method: "POST", body: JSON.stringify(body),
                                            headers: { "Content-Type": "application/json" } });

  function askToken() {
    const form = $("#auth");
    if (!form.hidden) return;
    const err = $("#auth-error");
    err.hidden = !token;
    err.textContent = token ? "The server refused that token." : "";
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    form.hidden = false;
    $("#models").hidden = true;
    $("#token").focus();
  }
  $("#auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("#token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    $("#token").value = "";
    $("#auth").hidden = true;
    $("#models").hidden = false;
    tick(true);
  });

  // -- numbers --------------------------------------------------------------------------

  // A quantile from histogram bucket counts, linear within the bucket (Prometheus'
  // histogram_quantile); the open last bucket answers its lower bound.
  function quantile(q, bounds, counts) {
    const total = counts.reduce((a, b) => a + b, 0);
    if (!total) return null;
    const rank = q * total;
    let cum = 0;
    for (let i = 0; i < counts.length; i++) {
      const before = cum;
      cum += counts[i];
      if (cum >= rank && counts[i] > 0) {
        const lo = i ? bounds[i - 1] : 0, hi = bounds[i];
        if (hi == null) return lo;
        return lo + (hi - lo) * (rank - before) / counts[i];
      }
    }
    return bounds[bounds.length - 2];
  }
  const diff = (a, b) => a.map((x, i) => x - (b ? b[i] : 0));
  const fmt = (x, digits = 3) => x == null || !isFinite(x) ? "–" : Number(x.toPrecision(digits)).toString();
  const fmtMs = (s) => s == null ? "–" : fmt(s * 1e3) + " ms";
  function fmtBytes(n) {
    const u = ["B", "kB", "MB", "GB"]; let i = 0;
    while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
    return `${fmt(n)} ${u[i]}`;
  }

  // Per model: the versions' counters summed, so a reload does not break the curves.
  function perModel(stats) {
    const out = {};
    for (const v of stats.versions) {
      const m = out[v.model] || (out[v.model] = { requests: 0, in_flight: 0, failures: 0 });
      m.requests += v.requests; m.in_flight += v.in_flight;
      for (const k of ["queue", "compute", "total", "batch_size"]) {
        const h = m[k] || (m[k] = { counts: v[k].counts.map(() => 0), sum: 0 });
        h.counts = h.counts.map((c, i) => c + v[k].counts[i]); h.sum += v[k].sum;
      }
    }
    for (const f of stats.failures) if (out[f.model]) out[f.model].failures += f.count;
    return out;
  }

  // -- charts -----------------------------------------------------------------------------

  const charts = new Set();
  function plot(target, series, data, { height, legend = false, time = true, yFmt } = {}) {
    const axis = { stroke: css("--muted"), grid: { stroke: css("--line"), width: 1 }, ticks: { show: false },
                   font: "10px system-ui" };
    const opts = {
      width: Math.max(120, target.clientWidth), height: height || target.clientHeight || 64,
      legend: { show: legend, live: false }, cursor: { points: { size: 5 } },
      scales: { x: { time }, y: { range: (u, lo, hi) => [Math.min(0, lo), hi > 0 ? hi * 1.1 : 1] } },
      axes: [Object.assign({}, axis, { show: !time, size: 20 }),
             Object.assign({}, axis, { size: 42, space: 16, values: yFmt ? (u, v) => v.map(yFmt) : undefined })],
      series: [{ label: time ? "time" : "epoch" }, ...series.map((s) => ({ label: s.label, stroke: css(s.color), width: 1.5, spanGaps: true,
                                            points: { show: false },
                                            fill: s.fill ? css(s.color) + "22" : undefined }))],
    };
    const u = new uPlot(opts, data, target);
    charts.add(u);
    target.dataset.points = String(data[0].length);
    return u;
  }
  window.addEventListener("resize", () => {
    for (const u of charts) u.setSize({ width: Math.max(120, u.root.parentElement.clientWidth), height: u.height });
  });

  const LIVE = [
    { key: "rate", title: "requests/s", series: [{ label: "req/s", color: "--c1", fill: true }],
      value: (p) => fmt(p.rate) },
    { key: "latency", title: "latency p50 / p99 (queue, compute)",
      series: [{ label: "queue p50", color: "--c2" }, { label: "queue p99", color: "--c4" },
               { label: "compute p50", color: "--c1" }, { label: "compute p99", color: "--c3" }],
      value: (p) => `${fmtMs(p.q50)} + ${fmtMs(p.c50)}`, yFmt: (v) => fmt(v) + "ms" },
    { key: "batch", title: "mean batch size", series: [{ label: "batch", color: "--c3", fill: true }],
      value: (p) => fmt(p.batch) },
    { key: "errors", title: "errors/s", series: [{ label: "errors/s", color: "--c2", fill: true }],
      value: (p) => fmt(p.errors) },
  ];

  // -- model cards ------------------------------------------------------------------------

  const cards = new Map(); // name -> {root, live: {key: {u, value, data}}, prev, sigKey, histKey, ...}
  let lastStats = null;

  function card(name) {
    let c = cards.get(name);
    if (c) return c;
    const root = el("section", { class: "card", "data-model": name });
    c = { name, root, live: {}, prev: null, sigKey: null, histKey: null };
    const badges = el("span", { class: "badges" });
    const note = el("span", { class: "note muted" });
    const act = (label, what) => el("button", { "data-action": what, text: label, onclick: () => action(c, what) });
    root.append(el("div", { class: "card-head" }, el("h2", { text: name }), badges,
                   el("div", { class: "actions" }, note, act("Load", "load"), act("Reload", "reload"),
                      act("Unload", "unload"))));
    const info = el("div", { class: "section info" });
    const liveBox = el("div", { class: "section" }, el("h3", { text: "live" }));
    const chartsBox = el("div", { class: "charts" });
    liveBox.append(chartsBox);
    for (const spec of LIVE) {
      const value = el("span", { class: "value", "data-stat": spec.key, text: "–" });
      const keys = spec.series.length > 1 ? el("div", { class: "keys" }, ...spec.series.map((s) =>
        el("span", {}, el("i", { style: `background:${css(s.color)}` }), s.label))) : null;
      const target = el("div", { class: "plot", "data-chart": spec.key });
      chartsBox.append(el("div", { class: "chart" }, el("div", { class: "label" }, el("span", { text: spec.title }), value),
                          target, keys));
      c.live[spec.key] = { spec, value, target, data: [[], ...spec.series.map(() => [])], u: null };
    }
    c.badges = badges; c.note = note; c.info = info;
    c.tryBox = el("div", { class: "section try" });
    c.training = el("div", { class: "section training", hidden: "" });
    root.append(el("div", { class: "grid" }, info, liveBox), el("div", { class: "grid" }, c.tryBox, c.training));
    $("#models").append(root);
    cards.set(name, c);
    return c;
  }

  function renderModel(m) {
    const c = card(m.name);
    const key = JSON.stringify(m);
    if (key === c.modelKey) return; // unchanged: keep the DOM (and any selection in it) as it is
    c.modelKey = key;
    c.badges.replaceChildren(...m.versions.map((v) =>
      el("span", { class: `badge ${v.state}`, "data-version": v.version, title: v.reason || v.state,
                   text: `v${v.version} ${v.state.toLowerCase()}` })));
    if (m.error) c.badges.append(el("span", { class: "badge FAILED", title: m.error, text: "config failed" }));
    c.ready = m.versions.filter((v) => v.state === "READY");
    const rows = m.versions.map((v) => el("tr", { "data-version": v.version },
      el("td", { text: `v${v.version}` }),
      el("td", {}, el("span", { class: `badge ${v.state}`, "data-state": v.state, text: v.state.toLowerCase() }),
         v.reason ? el("div", { class: "reason", text: v.reason }) : null),
      el("td", { "data-size": v.size || "", text: v.size ? fmtBytes(v.size) : "–", title: v.size ? `${v.size} bytes` : "" }),
      el("td", { class: "sha mono", "data-sha256": v.sha256 || "", text: v.sha256 || "–" })));
    const newest = c.ready[c.ready.length - 1];
    const io = newest ? el("table", { class: "io" }, el("tr", {}, ...["", "name", "datatype", "shape"].map((x) =>
      el("th", { text: x }))), ...["inputs", "outputs"].flatMap((k) => newest[k].map((s) =>
      el("tr", { "data-io": k }, el("td", { class: "muted", text: k.slice(0, -1) }), el("td", { class: "mono", text: s.name }),
         el("td", { text: s.datatype }), el("td", { class: "mono", text: JSON.stringify(s.shape) }))))) : null;
    fill(c.info,
      el("h3", { text: "versions" }),
      el("table", { class: "versions" }, el("tr", {}, ...["", "state", "size", "sha256"].map((x) => el("th", { text: x }))), ...rows),
      m.error ? el("p", { class: "reason", text: m.error }) : null,
      newest ? el("p", { class: "muted", text: `${newest.platform} · ${newest.file} · max batch ${newest.max_batch_size}` +
                                          (newest.load_seconds != null ? ` · loaded in ${fmt(newest.load_seconds * 1e3)} ms` : "") }) : null,
      io ? el("h3", { text: "inputs / outputs" }) : null, io,
      m.config ? el("details", {}, el("summary", { text: "config.json" }),
                    el("pre", { class: "config", text: JSON.stringify(m.config, null, 1) })) : null);
    renderTry(c, newest);
    renderTraining(c, newest);
  }

  function renderModels(state) {
    const names = new Set(state.models.map((m) => m.name));
    for (const [name, c] of cards) if (!names.has(name)) { c.root.remove(); cards.delete(name); }
    state.models.forEach(renderModel);
    $("#empty").hidden = state.models.length > 0;
    $("#sum-models").textContent = state.models.length;
    $("#sum-ready").textContent = state.models.filter((m) => m.versions.some((v) => v.state === "READY")).length;
  }

  // -- live numbers -----------------------------------------------------------------------

  function renderStats(stats) {
    const now = perModel(stats);
    let totalRate = 0, totalErr = 0;
    for (const c of cards.values()) {
      const cur = now[c.name];
      const prev = c.prev;
      c.prev = cur ? { t: stats.time, ...cur } : null;
      if (!cur || !prev || stats.time <= prev.t) continue;
      const dt = stats.time - prev.t;
      const dq = diff(cur.queue.counts, prev.queue.counts), dc = diff(cur.compute.counts, prev.compute.counts);
      const db = diff(cur.batch_size.counts, prev.batch_size.counts);
      const batches = db.reduce((a, b) => a + b, 0);
      const ms = (x) => x == null ? null : x * 1e3;
      const p = {
        rate: (cur.requests - prev.requests) / dt,
        q50: quantile(0.5, stats.latency_buckets, dq), q99: quantile(0.99, stats.latency_buckets, dq),
        c50: quantile(0.5, stats.latency_buckets, dc), c99: quantile(0.99, stats.latency_buckets, dc),
        batch: batches ? (cur.batch_size.sum - prev.batch_size.sum) / batches : null,
        errors: (cur.failures - prev.failures) / dt,
      };
      totalRate += p.rate; totalErr += p.errors;
      const rows = { rate: [p.rate], latency: [ms(p.q50), ms(p.q99), ms(p.c50), ms(p.c99)], batch: [p.batch],
                     errors: [p.errors] };
      for (const [key, L] of Object.entries(c.live)) {
        L.data[0].push(stats.time);
        rows[key].forEach((y, i) => L.data[i + 1].push(y));
        if (L.data[0].length > KEEP) L.data.forEach((s) => s.shift());
        L.value.textContent = L.spec.value(p);
        if (!L.u) L.u = plot(L.target, L.spec.series, L.data, { yFmt: L.spec.yFmt });
        else L.u.setData(L.data);
        L.target.dataset.points = String(L.data[0].length);
        L.target.dataset.last = String(rows[key][0] ?? "");
        L.target.dataset.max = String(Math.max(0, ...L.data[1].filter((y) => y != null)));
      }
    }
    if (lastStats) {
      $("#sum-rate").textContent = fmt(totalRate);
      $("#sum-errors").textContent = fmt(totalErr);
    }
    lastStats = stats;
  }

  // -- training curves (the History saved by fit) -----------------------------------------

  function renderTraining(c, v) {
    const history = v && v.history;
    const key = history ? JSON.stringify(history) : "";
    if (key === c.histKey) return;
    c.histKey = key;
    c.training.hidden = !history;
    c.training.replaceChildren();
    if (!history) return;
    const bases = [...new Set(Object.keys(history).map((k) => k.replace(/^val_/, "")))];
    const box = el("div", { class: "plots" });
    c.training.append(el("h3", { text: `training (v${v.version}, ${Object.values(history)[0].length} epochs)` }), box);
    for (const base of bases) {
      const names = [base, "val_" + base].filter((k) => history[k]);
      const n = Math.max(...names.map((k) => history[k].length));
      const target = el("div", { class: "plot", "data-curve": base });
      box.append(target);
      const series = names.map((k, i) => ({ label: k, color: i ? "--c2" : "--c1" }));
      requestAnimationFrame(() => plot(target, series, [Array.from({ length: n }, (_, i) => i + 1),
                                                       ...names.map((k) => history[k])],
                                       { height: 130, legend: true, time: false, yFmt: (y) => fmt(y) }));
      target.dataset.points = String(n);
    }
  }

  // -- try it -----------------------------------------------------------------------------

  // Image-like: NHWC with C 1 or 3, or (N, H, W) grayscale, with H and W fixed.
  function imageShape(s) {
    const d = s.shape;
    if (s.datatype === "BYTES") return null;
    if (d.length === 4 && (d[3] === 1 || d[3] === 3) && d[1] > 0 && d[2] > 0) return { h: d[1], w: d[2], c: d[3] };
    if (d.length === 3 && d[1] > 0 && d[2] > 0) return { h: d[1], w: d[2], c: 0 };
    return null;
  }
  const isText = (v, s) => s.datatype === "BYTES" || v.platform === "gguf"; // the language-model hook
  function zeros(shape) {
    const dims = shape.map((d) => (d > 0 ? d : 1));
    const make = (i) => (i === dims.length ? 0 : Array.from({ length: dims[i] }, () => make(i + 1)));
    return make(0);
  }
  function flatten(x, shape = [], depth = 0, out = []) {
    if (Array.isArray(x)) {
      if (shape.length <= depth) shape.push(x.length);
      else if (shape[depth] !== x.length) throw new Error(`ragged array at depth ${depth}: ${x.length} vs ${shape[depth]}`);
      for (const y of x) flatten(y, shape, depth + 1, out);
    } else {
      if (depth !== shape.length) throw new Error("ragged array: numbers at different depths");
      if (typeof x !== "number" && typeof x !== "boolean") throw new Error(`not a number: ${JSON.stringify(x)}`);
      out.push(x);
    }
    return { shape, data: out };
  }

  function renderTry(c, v) {
    const key = v ? `${v.version}:${v.sha256}` : "";
    if (key === c.sigKey) return;
    c.sigKey = key;
    c.tryBox.replaceChildren(el("h3", { text: "try it" }));
    if (!v) { c.tryBox.append(el("p", { class: "muted", text: "no ready version" })); return; }
    const fields = v.inputs.map((s) => {
      const text = isText(v, s);
      const area = el("textarea", { "data-input": s.name, spellcheck: "false", rows: text ? "3" : "4" });
      area.value = text ? "" : JSON.stringify(zeros(s.shape));
      if (text) area.placeholder = "text";
      const row = el("div", { class: "row" }, el("span", { class: "mono", text: `${s.name} ${s.datatype} ${JSON.stringify(s.shape)}` }));
      const img = imageShape(s);
      if (img) {
        const file = el("input", { type: "file", accept: "image/*", "data-image": s.name });
        const preview = el("canvas", { class: "preview", width: img.w, height: img.h, hidden: "" });
        file.addEventListener("change", async () => {
          if (!file.files[0]) return;
          try {
            area.value = JSON.stringify(await imageTensor(file.files[0], img, preview));
            preview.hidden = false;
            await send();
          } catch (e) { show(e); }
        });
        row.append(el("label", { class: "muted", text: `image → ${img.h}×${img.w}${img.c === 3 ? " RGB" : " gray"}, [0,1]:` }), file, preview);
      }
      return { s, area, row, text };
    });
    const button = el("button", { class: "primary", "data-action": "infer", text: "Send" });
    const status = el("span", { class: "muted", "data-try-status": "" });
    const result = el("div", { class: "result" });
    for (const f of fields) c.tryBox.append(f.row, f.area);
    c.tryBox.append(el("div", { class: "row" }, button, status), result);

    function show(e) { status.textContent = e.message; status.className = "error"; }
    async function send() {
      button.disabled = true; status.className = "muted"; status.textContent = "sending…";
      try {
        const inputs = fields.map(({ s, area, text }) => {
          if (text) return { name: s.name, shape: s.shape.map((d) => (d > 0 ? d : 1)), datatype: s.datatype, data: [area.value] };
          let parsed;
          try { parsed = JSON.parse(area.value); } catch (e) { throw new Error(`input ${s.name}: not JSON (${e.message})`); }
          const t = flatten(parsed);
          return { name: s.name, shape: t.shape, datatype: s.datatype, data: t.data };
        });
        const t0 = performance.now();
        const r = await post(`/v2/models/${encodeURIComponent(c.name)}/infer`, { inputs });
        status.textContent = `v${r.model_version} · ${fmt(performance.now() - t0)} ms`;
        result.replaceChildren(...r.outputs.map(outputView));
      } catch (e) { if (!(e instanceof AuthNeeded)) show(e); }
      finally { button.disabled = false; }
    }
    button.addEventListener("click", send);
  }

  function outputView(o) {
    const box = el("div", {}, el("div", { class: "mono", text: `${o.name} ${o.datatype} ${JSON.stringify(o.shape)}` }),
                   el("pre", { class: "output", "data-output": o.name, text: JSON.stringify(o.data) }));
    const side = el("div");
    if (o.shape.length === 2 && o.shape[0] === 1 && o.shape[1] > 1 && typeof o.data[0] === "number") {
      const order = o.data.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 5);
      const top = Math.max(1e-12, Math.abs(order[0][0]));
      side.append(el("h3", { text: "top classes" }), el("ol", { class: "top-classes", "data-output": o.name },
        ...order.map(([p, i]) => el("li", { "data-class": i }, el("span", { class: "mono", text: `class ${i}` }),
          el("span", {}, el("div", { class: "bar", style: `width:${Math.max(1, 100 * Math.abs(p) / top)}%` })),
          el("span", { class: "p", text: fmt(p, 4) })))));
    }
    return el("div", { class: "result" }, box, side);
  }

  // Decode an image file at the model's H×W on a canvas; grayscale (ITU-R 601 luma) when the
  // model takes one channel; values scaled to [0, 1]. The nested array has a batch of 1.
  async function imageTensor(file, { h, w, c }, preview) {
    const bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    const ctx = preview.getContext("2d", { willReadFrequently: true });
    ctx.clearRect(0, 0, w, h);
    ctx.drawImage(bitmap, 0, 0, w, h);
    const px = ctx.getImageData(0, 0, w, h).data;
    const rows = [];
    for (let y = 0; y < h; y++) {
      const row = [];
      for (let x = 0; x < w; x++) {
        const k = 4 * (y * w + x), r = px[k] / 255, g = px[k + 1] / 255, b = px[k + 2] / 255;
        const gray = 0.299 * r + 0.587 * g + 0.114 * b;
        row.push(c === 3 ? [r, g, b] : c === 1 ? [gray] : gray);
      }
      rows.push(row);
    }
    return [rows];
  }

  // -- load / unload / reload -------------------------------------------------------------

  async function action(c, what) {
    const buttons = c.root.querySelectorAll(".card-head button");
    buttons.forEach((b) => (b.disabled = true));
    c.note.className = "note muted";
    c.note.textContent = `${what}ing…`;
    try {
      // reload = load: the repository is read again, changed versions are loaded and swapped in
      await post(`/v2/repository/models/${encodeURIComponent(c.name)}/${what === "unload" ? "unload" : "load"}`, {});
      c.note.textContent = `${what}ed`;
    } catch (e) {
      if (!(e instanceof AuthNeeded)) { c.note.className = "note error"; c.note.textContent = e.message; }
    } finally {
      buttons.forEach((b) => (b.disabled = false));
      await tick(true);
    }
  }

  // -- the poll loop ----------------------------------------------------------------------

  let n = 0, busy = false;
  async function tick(withModels = false) {
    if (busy && !withModels) return;
    busy = true;
    try {
      if (withModels || n % MODELS_EVERY === 0) renderModels(await call("/dashboard/api/models"));
      renderStats(await call("/dashboard/api/stats"));
      n++;
      $("#conn").className = "dot ok";
      $("#updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      if (!(e instanceof AuthNeeded)) {
        $("#conn").className = "dot bad";
        $("#updated").textContent = "server unreachable: " + e.message;
      }
    } finally { busy = false; }
  }
  window.engineDashboard = { cards, quantile, tick }; // for tests and the console
  tick(true);
  setInterval(() => { if ($("#auth").hidden) tick(); }, POLL_MS);
})();
