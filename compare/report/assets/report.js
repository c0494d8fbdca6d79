// report.html's script: sortable tables, chart tooltips, the sample browser, the over-optimisation view.
// The page reads the same without it (tables, claims and figures are static HTML); nothing here fetches
// anything.
"use strict";

// -- a word-level diff: which words of an answer are not on a longest common subsequence of words with a
// reference answer (what changed against it); spaces are kept as they are and never marked
function changedWords(text, reference) {
  const pieces = text.split(/(\s+)/).filter((p) => p !== "");
  const words = [];
  pieces.forEach((p, k) => {
    if (!/^\s+$/.test(p)) words.push([p, k]);
  });
  const ref = reference.split(/\s+/).filter(Boolean);
  const n = words.length, m = ref.length;
  const L = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      L[i][j] = words[i][0] === ref[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
    }
  }
  const kept = new Set();
  for (let i = 0, j = 0; i < n && j < m; ) {
    if (words[i][0] === ref[j]) {
      kept.add(words[i][1]);
      i++;
      j++;
    } else if (L[i + 1][j] >= L[i][j + 1]) i++;
    else j++;
  }
  return pieces.map((p, k) => [p, !/^\s+$/.test(p) && !kept.has(k)]);
}

// `text` into `element`, each word that differs from `reference` in a <mark class="diff"> (no reference:
// plain text); returns how many words are marked
function showChanges(element, text, reference) {
  element.textContent = "";
  if (reference === null || reference === undefined) {
    element.textContent = text;
    return 0;
  }
  let marked = 0;
  for (const [piece, changed] of changedWords(text, reference)) {
    if (changed) {
      const mark = document.createElement("mark");
      mark.className = "diff";
      mark.textContent = piece;
      element.appendChild(mark);
      marked++;
    } else element.appendChild(document.createTextNode(piece));
  }
  return marked;
}

(function () {
  // -- tables: a click on a header sorts by that column ------------------------------------------------
  const MISSING = new Set(["", "–", "-", "—", "nan"]);

  function cellKey(cell) {
    const text = cell.textContent.trim();
    if (MISSING.has(text)) return null;
    // "0.61 ± 0.03 (significant)" sorts by its mean, "256 (on-policy)" by 256
    const m = text.replace(/^−/, "-").match(/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?(?=$|[\s%(±])/i);
    return m ? parseFloat(m[0]) : text;
  }

  function sortTable(table, column, button) {
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    const keys = rows.map((row) => (row.cells[column] ? cellKey(row.cells[column]) : null));
    const numeric = keys.every((k) => k === null || typeof k === "number");
    const th = button.closest("th");
    const ascending = th.getAttribute("aria-sort") !== "ascending";
    for (const other of table.tHead.rows[0].cells) other.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const order = rows.map((row, i) => i);
    order.sort((a, b) => {
      const ka = keys[a], kb = keys[b];
      if (ka === null || kb === null) return ka === kb ? a - b : ka === null ? 1 : -1; // blanks last
      let d = numeric ? ka - kb : String(ka).localeCompare(String(kb), undefined, { numeric: true });
      if (!ascending) d = -d;
      return d || a - b;
    });
    for (const i of order) body.appendChild(rows[i]);
  }

  for (const table of document.querySelectorAll("table.sortable")) {
    if (!table.tHead || !table.tBodies.length) continue;
    Array.from(table.tHead.rows[0].cells).forEach((th, column) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      button.title = "sort by this column";
      while (th.firstChild) button.appendChild(th.firstChild);
      th.appendChild(button);
      button.addEventListener("click", () => sortTable(table, column, button));
    });
  }

  // -- charts: each mark's <title> becomes a tooltip --------------------------------------------------
  const tip = document.getElementById("tooltip");
  for (const mark of document.querySelectorAll("svg .mark")) {
    const title = mark.querySelector("title");
    if (!title) continue;
    mark.dataset.tip = title.textContent;
    mark.setAttribute("aria-label", title.textContent);
    title.remove(); // one tooltip, not the browser's as well
  }

  function showTip(mark, x, y) {
    tip.textContent = mark.dataset.tip;
    tip.hidden = false;
    const w = tip.offsetWidth, h = tip.offsetHeight;
    tip.style.left = Math.max(4, Math.min(x + 12, window.innerWidth - w - 8)) + "px";
    tip.style.top = (y + 14 + h > window.innerHeight ? y - h - 10 : y + 14) + "px";
  }

  document.addEventListener("mouseover", (e) => {
    const mark = e.target.closest && e.target.closest("[data-tip]");
    if (mark) showTip(mark, e.clientX, e.clientY);
  });
  document.addEventListener("mousemove", (e) => {
    const mark = e.target.closest && e.target.closest("[data-tip]");
    if (mark) showTip(mark, e.clientX, e.clientY);
  });
  document.addEventListener("mouseout", (e) => {
    if (e.target.closest && e.target.closest("[data-tip]")) tip.hidden = true;
  });
  document.addEventListener("focusin", (e) => {
    if (!e.target.dataset || !e.target.dataset.tip) return;
    const box = e.target.getBoundingClientRect();
    showTip(e.target, box.right, box.top);
  });
  document.addEventListener("focusout", () => (tip.hidden = true));

  // -- the sample browser -------------------------------------------------------------------------------
  const source = document.getElementById("report-samples");
  const data = source ? JSON.parse(source.textContent) : { n: 0 };
  const status = document.getElementById("sb-status");
  if (!status) return;
  if (!data.n) {
    status.textContent = "This report saved no samples.";
    return;
  }
  const C = data.columns;
  const PER_CARD = 30; // completions shown per arm when every prompt is shown at once
  const $ = (id) => document.getElementById(id);
  const split = $("sb-split"), prompt = $("sb-prompt"), seed = $("sb-seed");
  const goldMin = $("sb-gold-min"), goldMax = $("sb-gold-max"), failure = $("sb-failure"), order = $("sb-order");
  const armBox = $("sb-arms"), cards = $("sb-cards"), promptText = $("sb-prompt-text");
  const diff = $("sb-diff");
  // the base model's answer to the same split, prompt, seed and sample number, which others are diffed to
  const baseAnswer = new Map();
  const answerKey = (i) => C.split[i] + " " + C.prompt_index[i] + " " + C.seed[i] + " " + C.sample[i];
  if (data.base !== null && data.base !== undefined && C.sample) {
    for (let i = 0; i < data.n; i++) if (C.arm[i] === data.base) baseAnswer.set(answerKey(i), C.text[i]);
  }
  if (!baseAnswer.size) diff.closest("label").hidden = true;

  function option(select, value, label) {
    const o = document.createElement("option");
    o.value = String(value);
    o.textContent = label;
    select.appendChild(o);
  }

  // the colour of a completion's edge, red to green, spans the middle 90% of every gold reward saved
  const golds = C.gold.filter((g) => g !== null).sort((a, b) => a - b);
  const lo = golds.length ? golds[Math.floor(0.05 * (golds.length - 1))] : 0;
  const hi = golds.length ? golds[Math.ceil(0.95 * (golds.length - 1))] : 1;
  data.splits.forEach((s, i) => option(split, i, data.split_names[i]));
  const seeds = Array.from(new Set(C.seed)).sort((a, b) => a - b);
  option(seed, "all", "all seeds");
  for (const s of seeds) option(seed, s, "seed " + s);
  seed.value = String(seeds[0]);
  for (const kind of data.kinds) option(failure, kind.key, kind.label);
  const armChecks = data.arms.map((arm, i) => {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = true;
    box.value = String(i);
    box.dataset.arm = arm;
    label.append(box, " " + arm);
    armBox.appendChild(label);
    return box;
  });

  function fillPrompts() {
    const s = Number(split.value);
    const first = new Map();
    for (let i = 0; i < data.n; i++) {
      if (C.split[i] === s && !first.has(C.prompt_index[i])) first.set(C.prompt_index[i], C.prompt[i]);
    }
    prompt.textContent = "";
    option(prompt, "all", "all prompts");
    for (const [index, ref] of Array.from(first).sort((a, b) => a[0] - b[0])) {
      const text = data.strings[ref];
      option(prompt, index, "#" + index + ": " + (text.length > 70 ? text.slice(0, 69) + "…" : text));
    }
    prompt.value = first.size ? String(Math.min(...first.keys())) : "all";
  }

  function failed(i, key) {
    const kind = data.kinds.find((k) => k.key === key);
    const v = C[key][i];
    return kind.test === "false" ? v === 0 : v !== null && v > 0;
  }

  function number(value, digits) {
    return value === null ? "–" : value.toFixed(digits);
  }

  function badge(parent, text, cls) {
    const b = document.createElement("span");
    b.className = "badge " + (cls || "");
    b.textContent = text;
    parent.appendChild(b);
  }

  function item(i) {
    const li = document.createElement("li");
    const share = C.gold[i] === null || hi <= lo ? 0.5 : Math.min(1, Math.max(0, (C.gold[i] - lo) / (hi - lo)));
    li.style.borderLeftColor = "hsl(" + Math.round(120 * share) + ", 65%, 42%)";
    const text = document.createElement("p");
    text.className = "sb-text";
    const answer = data.strings[C.text[i]].trim() || "(empty)";
    const base = C.arm[i] === data.base ? undefined : baseAnswer.get(answerKey(i));
    showChanges(text, answer, diff.checked && base !== undefined ? data.strings[base].trim() : null);
    const meta = document.createElement("p");
    meta.className = "sb-meta";
    meta.textContent =
      "gold " + number(C.gold[i], 3) + " · RM " + number(C.rm[i], 3) + " · log-ratio " + number(C.lr[i], 2) +
      " · seed " + C.seed[i] + (prompt.value === "all" ? " · prompt #" + C.prompt_index[i] : "");
    for (const kind of data.kinds) {
      if (failed(i, kind.key)) {
        badge(meta, kind.test === "false" ? kind.label : kind.key.replace("_", " ") + " " + C[kind.key][i], "bad");
      }
    }
    li.append(text, meta);
    return li;
  }

  function render() {
    const s = Number(split.value);
    const p = prompt.value === "all" ? null : Number(prompt.value);
    const sd = seed.value === "all" ? null : Number(seed.value);
    const min = goldMin.value === "" ? -Infinity : Number(goldMin.value);
    const max = goldMax.value === "" ? Infinity : Number(goldMax.value);
    const arms = new Set(armChecks.filter((b) => b.checked).map((b) => Number(b.value)));
    const groups = new Map(); // "arm point" -> rows in the split, and those passing the filters
    const prompts = new Set();
    let shown = 0;
    for (let i = 0; i < data.n; i++) {
      if (C.split[i] !== s || !arms.has(C.arm[i])) continue;
      if (p !== null && C.prompt_index[i] !== p) continue;
      if (sd !== null && C.seed[i] !== sd) continue;
      const key = C.arm[i] * 10000 + C.point[i];
      if (!groups.has(key)) groups.set(key, []);
      const g = C.gold[i];
      if (g !== null && (g < min || g > max)) continue;
      if (g === null && (min > -Infinity || max < Infinity)) continue;
      if (failure.value && !failed(i, failure.value)) continue;
      groups.get(key).push(i);
      prompts.add(C.prompt[i]);
      shown++;
    }
    cards.textContent = "";
    // "hack": what the reward model likes and the gold reward does not, first; rows without a score last
    const hack = (i) => (C.rm[i] === null || C.gold[i] === null ? -Infinity : C.rm[i] - C.gold[i]);
    const gold = (i) => (C.gold[i] === null ? Infinity : C.gold[i]);
    const by = { hack: (a, b) => hack(b) - hack(a) || a - b, gold: (a, b) => gold(a) - gold(b) || a - b }[order.value];
    for (const key of Array.from(groups.keys()).sort((a, b) => a - b)) {
      const rows = by ? groups.get(key).slice().sort(by) : groups.get(key);
      const arm = data.arms[Math.floor(key / 10000)], point = data.points[key % 10000];
      const card = document.createElement("article");
      card.className = "sb-card";
      card.dataset.arm = arm;
      const h = document.createElement("h3");
      h.textContent = arm + (point ? " (" + point + ")" : "");
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = " " + rows.length;
      h.appendChild(count);
      card.appendChild(h);
      if (!rows.length) {
        const none = document.createElement("p");
        none.className = "none";
        none.textContent = "no sample matches";
        card.appendChild(none);
      } else {
        const list = document.createElement("ol");
        for (const i of rows.slice(0, p === null ? PER_CARD : rows.length)) list.appendChild(item(i));
        card.appendChild(list);
        if (p === null && rows.length > PER_CARD) {
          const more = document.createElement("p");
          more.className = "none";
          more.textContent = "… and " + (rows.length - PER_CARD) + " more (pick a prompt to see them all)";
          card.appendChild(more);
        }
      }
      cards.appendChild(card);
    }
    promptText.textContent = "";
    if (p !== null && prompts.size) {
      promptText.append("Prompt: ");
      const code = document.createElement("code");
      code.textContent = Array.from(prompts).map((r) => data.strings[r]).join(" / ");
      promptText.appendChild(code);
    }
    status.textContent =
      shown + " completion" + (shown === 1 ? "" : "s") + " shown, from " + groups.size + " arm" +
      (groups.size === 1 ? "" : "s") + " (" + data.n + " samples in this page" +
      (data.left_out ? "; " + data.left_out + " more, of later prompts, only in samples.csv)" : ")");
  }

  split.addEventListener("change", () => {
    fillPrompts();
    render();
  });
  for (const control of [prompt, seed, failure, order, armBox, diff]) control.addEventListener("change", render);
  for (const control of [goldMin, goldMax]) control.addEventListener("input", render);
  $("sb-controls").addEventListener("submit", (e) => e.preventDefault());
  $("sb-controls").hidden = false;
  fillPrompts();
  render();
})();

// -- the over-optimisation view: a slider along a track (training checkpoints, or a strength sweep) -------
(function () {
  const source = document.getElementById("report-overopt");
  const status = document.getElementById("oo-status");
  if (!source || !status) return;
  const data = JSON.parse(source.textContent);
  const $ = (id) => document.getElementById(id);
  const trackSelect = $("oo-track"), axis = $("oo-axis"), slider = $("oo-slider"), diff = $("oo-diff");
  const answers = $("oo-answers"), note = $("oo-note");
  const charts = Array.from(document.querySelectorAll(".oo-chart"));
  const number = (value, digits) => (value === null ? "–" : value.toFixed(digits));
  data.tracks.forEach((track, i) => {
    const o = document.createElement("option");
    o.value = String(i);
    o.textContent = track.title;
    trackSelect.appendChild(o);
  });

  function render() {
    const track = data.tracks[Number(trackSelect.value)];
    const at = Number(slider.value);
    const stop = track.stops[at];
    for (const chart of charts) {
      const shown = chart.dataset.track === trackSelect.value && chart.dataset.axis === axis.value;
      chart.hidden = !shown;
      if (shown) for (const now of chart.querySelectorAll(".now")) now.toggleAttribute("hidden", now.dataset.stop !== String(at));
    }
    status.textContent =
      stop.label + " (" + (at + 1) + " of " + track.stops.length + "): gold " + number(stop.gold, 3) +
      " · RM " + number(stop.rm, 3) + " · KL " + number(stop.kl, 3);
    note.textContent = track.note + (diff.checked ? " Marked: words not in " + track.reference_label + "." : "");
    answers.textContent = "";
    for (const [index, prompt, text, gold, rm, lr] of stop.rows) {
      const li = document.createElement("li");
      li.dataset.prompt = String(index);
      const head = document.createElement("p");
      head.className = "oo-prompt";
      head.textContent = "#" + index + ": " + data.strings[prompt];
      const body = document.createElement("p");
      body.className = "sb-text";
      const reference = track.reference[String(index)];
      const answer = data.strings[text].trim() || "(empty)";
      showChanges(body, answer, diff.checked && reference !== undefined ? data.strings[reference].trim() : null);
      const meta = document.createElement("p");
      meta.className = "sb-meta";
      meta.textContent = "gold " + number(gold, 3) + " · RM " + number(rm, 3) + " · log-ratio " + number(lr, 2);
      li.append(head, body, meta);
      answers.appendChild(li);
    }
  }

  trackSelect.addEventListener("change", () => {
    slider.max = String(data.tracks[Number(trackSelect.value)].stops.length - 1);
    slider.value = "0";
    render();
  });
  for (const control of [axis, diff]) control.addEventListener("change", render);
  slider.addEventListener("input", render);
  $("oo-controls").addEventListener("submit", (e) => e.preventDefault());
  $("oo-controls").hidden = false;
  slider.max = String(data.tracks[0].stops.length - 1);
  render();
})();
