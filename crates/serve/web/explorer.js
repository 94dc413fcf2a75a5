// uae explorer: every text from the corpus, the labels or the user goes into the
// page through textContent, never as markup.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { overview: null, labelOffset: 0, compareOffset: 0, pageSize: 50 };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "onclick") e.addEventListener("click", v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fmt(x, digits = 3) {
  return x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(digits);
}

function status(msg) {
  $("status").textContent = msg || "";
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  };
  const r = await fetch(path, init);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const msg = (data.error && (data.error.message || data.error)) || r.statusText;
    throw new Error(`${path}: ${msg}`);
  }
  return data;
}

// ---- views and routing (#view/arg?query) ----

function route() {
  // The query part is URL-encoded (it may hold "?" and "/"): split before decoding.
  const hash = location.hash.slice(1);
  const at = hash.indexOf("?");
  const path = decodeURIComponent(at < 0 ? hash : hash.slice(0, at));
  const query = at < 0 ? "" : hash.slice(at + 1);
  const [view, ...rest] = path.split("/");
  return { view: view || defaultView(), arg: rest.join("/"), params: new URLSearchParams(query) };
}

function defaultView() {
  const o = state.overview;
  if (o && o.model) return "search";
  if (o && o.labels) return "labels";
  return "compare";
}

async function show() {
  const { view, arg, params } = route();
  for (const v of ["search", "labels", "compare"]) {
    $("view-" + v).hidden = v !== view;
  }
  for (const a of document.querySelectorAll("#tabs a")) {
    a.classList.toggle("active", a.dataset.view === view);
  }
  status("");
  try {
    if (view === "search") await showSearch(params);
    if (view === "labels") await showLabels(arg);
    if (view === "compare") await showCompare(arg);
  } catch (e) {
    status(e.message);
  }
  document.body.dataset.ready = view;
}

// ---- search ----

async function showSearch(params) {
  const q = params.get("q");
  const key = `${q}\u0000${params.get("k")}`;
  if (q === null || key === state.lastSearch) return;
  state.lastSearch = key;
  $("query").value = q;
  if (params.get("k")) $("k").value = params.get("k");
  await runSearch();
}

function hitItem(hit, otherIds) {
  const other = otherIds ? otherIds.indexOf(hit.id) : -1;
  const rank = hit.rank;
  let move = null;
  if (otherIds) {
    if (other < 0) move = el("span", { class: "new", title: "not in the other list" }, " new");
    else if (other > rank) move = el("span", { class: "moved-up", title: `rank ${other + 1} there` }, ` ↑${other - rank}`);
    else if (other < rank) move = el("span", { class: "moved-down", title: `rank ${other + 1} there` }, ` ↓${rank - other}`);
  }
  const meta = [`${hit.id}`, `score ${fmt(hit.score)}`];
  if (hit.expected_utility !== undefined) meta.push(`expected utility ${fmt(hit.expected_utility, 2)} nats`);
  if (hit.p_helps !== undefined) meta.push(`p(helps) ${fmt(hit.p_helps, 2)}`);
  return el("li", { "data-id": hit.id },
    el("div", { class: "meta" }, meta.join(" · "), move),
    el("p", { class: "passage" }, hit.text));
}

async function runSearch() {
  const query = $("query").value;
  const k = Number($("k").value) || 10;
  const o = state.overview;
  const asks = [api("search", { query, k })];
  if (o.against) asks.push(api("against/search", { query, k }));
  const [mine, base] = await Promise.all(asks);
  mine.hits.forEach((h, i) => (h.rank = i));
  const baseIds = base ? base.hits.map((h) => h.id) : null;
  const mineIds = mine.hits.map((h) => h.id);
  $("hits").replaceChildren(...mine.hits.map((h) => hitItem(h, baseIds)));
  if (base) {
    base.hits.forEach((h, i) => (h.rank = i));
    $("against-hits").replaceChildren(...base.hits.map((h) => hitItem(h, mineIds)));
  }
  document.body.dataset.searched = String(mine.hits.length);
}

// ---- labels ----

function histogramFigure(title, edges, counts) {
  const ns = "http://www.w3.org/2000/svg";
  const w = 360, h = 120, pad = 18;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h + pad);
  svg.setAttribute("role", "img");
  const max = Math.max(1, ...counts);
  const bw = w / counts.length;
  counts.forEach((c, i) => {
    const r = document.createElementNS(ns, "rect");
    const bh = (h - 4) * (c / max);
    r.setAttribute("x", i * bw + 1);
    r.setAttribute("y", h - bh);
    r.setAttribute("width", bw - 2);
    r.setAttribute("height", bh);
    const t = document.createElementNS(ns, "title");
    const lo = i === 0 ? "−∞" : edges[i - 1];
    const hi = i === edges.length ? "∞" : edges[i];
    t.textContent = `[${lo}, ${hi}) nats: ${c}`;
    r.append(t);
    svg.append(r);
  });
  for (const i of [0, Math.floor(edges.length / 2), edges.length - 1]) {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", (i + 1) * bw - 6);
    t.setAttribute("y", h + 12);
    t.textContent = String(edges[i]);
    svg.append(t);
  }
  return el("figure", {}, svg, el("figcaption", {}, title));
}

async function showLabels(arg) {
  if (!$("histograms").hasChildNodes()) {
    const hgram = await api("api/labels/histogram");
    $("histograms").replaceChildren(
      histogramFigure("utility of every candidate (nats)", hgram.edges, hgram.all),
      histogramFigure("each question's best candidate (nats)", hgram.edges, hgram.best));
  }
  await loadLabelPage();
  if (arg !== "") await showLabel(arg);
  else $("label-detail").hidden = true;
}

async function loadLabelPage() {
  const p = new URLSearchParams({
    offset: state.labelOffset, limit: state.pageSize,
    filter: $("filter").value, bar: $("bar").value || "2", q: $("needle").value,
  });
  const page = await api("api/labels?" + p);
  $("label-count").textContent = `${page.total} questions` +
    (page.total ? `, ${page.offset + 1}–${page.offset + page.rows.length} shown` : "");
  $("label-list").tBodies[0].replaceChildren(...page.rows.map((r) =>
    el("tr", { "data-n": r.n, onclick: () => (location.hash = "labels/" + r.n) },
      el("td", {}, r.n), el("td", {}, r.question), el("td", {}, r.candidates),
      el("td", {}, fmt(r.best_utility, 2)),
      el("td", {}, r.has_gold ? (r.best_is_gold ? "best" : "not best") : ""))));
  $("label-prev").disabled = state.labelOffset === 0;
  $("label-next").disabled = page.offset + page.rows.length >= page.total;
}

// A utility bar. Its width is set through the CSSOM: the page's content security
// policy allows no inline style attributes.
function bar(px, negative) {
  const b = el("span", { class: "bar" + (negative ? " negative" : "") });
  b.style.width = `${Math.max(1, Math.round(px))}px`;
  return b;
}

async function showLabel(n) {
  const d = await api("api/labels/" + encodeURIComponent(n));
  const scale = Math.max(1, ...d.candidates.map((c) => Math.abs(c.utility)));
  const box = $("label-detail");
  box.replaceChildren(
    el("h2", {}, d.question),
    el("p", { class: "meta" }, `question ${d.question_id}`, d.scope ? ` · scope ${d.scope}` : ""),
    el("h3", {}, "Answers"),
    el("ul", {}, ...d.answers.map((a) =>
      el("li", {}, a.text, el("span", { class: "meta" }, ` NLL without a passage ${fmt(a.nll_without, 2)}`)))),
    el("h3", {}, `${d.candidates.length} candidates, most useful first`),
    ...d.candidates.map((c, i) => el("div", { class: "candidate", "data-passage": c.passage_id },
      el("div", { class: "meta" },
        `${i + 1}. ${c.passage_id}`,
        c.is_gold ? el("span", { class: "gold", title: "gold evidence" }, " ★ gold") : null,
        el("span", { class: "tag" }, c.source)),
      el("div", {},
        bar(200 * Math.abs(c.utility) / scale, c.utility < 0),
        ` utility ${fmt(c.utility, 2)} nats · NLL ${fmt(c.nll_with, 2)} with the passage`),
      el("p", { class: "passage" }, c.text))));
  box.hidden = false;
  box.scrollIntoView();
}

// ---- compare ----

async function showCompare(arg) {
  if (!$("compare-summary").hasChildNodes()) {
    const s = await api("api/compare");
    const head = el("tr", {}, ...["metric", `A: ${s.a}`, `B: ${s.b}`, "B - A [95% CI]", "relative", "p"].map((h) => el("th", {}, h)));
    const rows = s.comparison.metrics.map((m) => el("tr", {},
      el("td", {}, m.metric), el("td", {}, fmt(m.a, 4)), el("td", {}, fmt(m.b, 4)),
      el("td", {}, `${fmt(m.diff, 4)} [${fmt(m.diff_ci[0], 4)}, ${fmt(m.diff_ci[1], 4)}]`),
      el("td", {}, `${fmt(m.rel_pct, 1)}%`), el("td", {}, fmt(m.p_value, 3))));
    $("compare-summary").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
  }
  const page = await api(`api/compare/questions?offset=${state.compareOffset}&limit=${state.pageSize}`);
  $("compare-list").tBodies[0].replaceChildren(...page.rows.map((r) =>
    el("tr", { onclick: () => (location.hash = "compare/" + encodeURIComponent(r.question_id)) },
      el("td", {}, r.question_id), el("td", {}, fmt(r.a, 3)), el("td", {}, fmt(r.b, 3)),
      el("td", {}, fmt(r.b - r.a, 3)))));
  $("compare-prev").disabled = state.compareOffset === 0;
  $("compare-next").disabled = page.offset + page.rows.length >= page.total;
  const box = $("compare-detail");
  if (arg === "") {
    box.hidden = true;
    return;
  }
  const r = await api("api/compare/questions/" + encodeURIComponent(arg));
  const side = (name, list) => el("div", {}, el("h3", {}, `${name}: ${r.question_id}`),
    el("ol", { class: "hits" }, ...list.map((x) => el("li", {},
      x.passage_id,
      x.relevant ? el("span", { class: "gold" }, " ★ relevant") : null,
      x.utility !== undefined ? el("span", { class: "meta" }, ` utility ${fmt(x.utility, 2)}`) : null,
      el("span", { class: "meta" }, x.other_rank ? ` (rank ${x.other_rank} in the other)` : " (not in the other)")))));
  const [a, b] = state.overview.compare;
  box.replaceChildren(side("A " + a, r.a), side("B " + b, r.b));
  box.hidden = false;
}

// ---- start ----

async function start() {
  try {
    state.overview = await api("api/explore");
  } catch (e) {
    status(e.message);
    return;
  }
  const o = state.overview;
  const tab = (v, on) => (document.querySelector(`#tabs a[data-view=${v}]`).hidden = !on);
  tab("search", !!o.model);
  tab("labels", !!o.labels);
  tab("compare", !!o.compare);
  if (o.model) $("model-name").textContent = o.model;
  if (o.against) {
    $("against-name").textContent = o.against;
    $("against-column").hidden = false;
  }
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = "search?" + new URLSearchParams({ q: $("query").value, k: $("k").value });
  });
  $("label-filter").addEventListener("submit", (e) => {
    e.preventDefault();
    state.labelOffset = 0;
    loadLabelPage().catch((err) => status(err.message));
  });
  $("label-prev").addEventListener("click", () => {
    state.labelOffset = Math.max(0, state.labelOffset - state.pageSize);
    loadLabelPage().catch((err) => status(err.message));
  });
  $("label-next").addEventListener("click", () => {
    state.labelOffset += state.pageSize;
    loadLabelPage().catch((err) => status(err.message));
  });
  $("compare-prev").addEventListener("click", () => {
    state.compareOffset = Math.max(0, state.compareOffset - state.pageSize);
    showCompare(route().arg).catch((err) => status(err.message));
  });
  $("compare-next").addEventListener("click", () => {
    state.compareOffset += state.pageSize;
    showCompare(route().arg).catch((err) => status(err.message));
  });
  window.addEventListener("hashchange", show);
  await show();
}

start();
