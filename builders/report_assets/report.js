// The report page: draws the Vega-Lite charts and the filterable list of prompts.
// All text from the tables is set with textContent, never parsed as HTML: answers and judge
// outputs are adversarial input.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const PAGE = 25;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const num = (x, d = 2) => (x === null || x === undefined ? "—" : Number(x).toFixed(d));
  const badge = (text, kind) => el("span", { class: "badge " + (kind || "") }, text);

  // --- charts ------------------------------------------------------------------------------
  const pending = [];
  document.querySelectorAll("[data-chart]").forEach((node) => {
    const spec = data.charts[node.dataset.chart];
    pending.push(
      vegaEmbed(node, spec, { actions: false, renderer: "svg" })
        .then(() => node.classList.add("drawn"))
        .catch((err) => {
          node.classList.add("failed");
          node.textContent = "This chart could not be drawn: " + err;
          console.error("chart " + node.dataset.chart + ": " + err);
        })
    );
  });

  // --- the views of one prompt (builders/report/items.py ITEM_SECTIONS) ---------------------
  function candidateName(item, id) {
    const c = item.candidates.find((x) => x.id === id);
    return c ? "iteration " + c.iteration + " (" + c.generator + ", " + id.slice(0, 8) + ")" : id.slice(0, 8);
  }

  function viewCandidates(item) {
    return item.candidates.map((c) => {
      const tags = [];
      if (c.chosen) tags.push(badge("chosen", "good"));
      if (c.kto === true) tags.push(badge("KTO desirable", "good"));
      if (c.kto === false) tags.push(badge("KTO undesirable", "bad"));
      if (c.in_dpo && !c.chosen) tags.push(badge("DPO rejected", "bad"));
      if (c.problem) tags.push(badge("no answer: " + c.problem, "warn"));
      if (c.dropped) tags.push(badge("left out: " + c.dropped, "muted"));
      return el("div", { class: "candidate" + (c.chosen ? " is-chosen" : "") },
        el("div", { class: "candidate-head" },
          el("strong", {}, "Iteration " + c.iteration), " · " + c.generator,
          c.reviewers.length ? " · reviewed by " + c.reviewers.join(", ") : "",
          " · mean score " + num(c.score) + (c.rank ? " · rank " + c.rank : ""),
          c.review_score !== null ? " · review score " + num(c.review_score, 1) + "/10" : "", " ", tags),
        el("pre", { class: "text" }, c.response));
    });
  }

  function viewJudging(item) {
    if (!item.judging.length) return [el("p", { class: "muted" }, "No judge call showed these candidates.")];
    return item.judging.map((call) => {
      const letters = call.shown.map((id, i) => String.fromCharCode(65 + i) + " = " + candidateName(item, id));
      const scores = call.scores.map((s, i) => String.fromCharCode(65 + i) + ": " + (s === null ? "—" : num(s, 2)) + "/" + call.scale);
      return el("div", { class: "call" + (call.outcome !== "ok" ? " failed-call" : "") },
        el("div", { class: "call-head" },
          el("strong", {}, call.judge), " (" + call.judge_model + ") · order " + call.presentation + " · ",
          call.outcome === "ok" ? scores.join(", ") : badge(call.outcome + ": " + (call.parse_error || ""), "bad"),
          call.score_mode === "expected" ? " · expected scores" : "", call.attempts > 1 ? " · asked twice" : ""),
        el("div", { class: "muted small" }, "shown: " + letters.join("; ")),
        el("details", {}, el("summary", {}, "the judge's reasoning"), el("pre", { class: "text" }, call.raw)));
    });
  }

  function viewDebate(item) {
    if (!item.debate.length) return [];
    return item.debate.map((t) => el("div", { class: "turn" },
      el("strong", {}, t.role.replace(/_/g, " ")), " (" + t.referee + ", order " + t.presentation + ", round " + t.round + ")",
      el("pre", { class: "text" }, t.message)));
  }

  function viewExports(item) {
    const out = [];
    for (const d of item.exports.dpo) {
      out.push(el("div", {}, badge("DPO", "good"), " chosen ", candidateName(item, d.chosen_id), " over ",
        candidateName(item, d.rejected_id), " · margin " + num(d.margin)));
    }
    for (const k of item.exports.kto) {
      out.push(el("div", {}, badge("KTO " + (k.label ? "desirable" : "undesirable"), k.label ? "good" : "bad"), " ",
        candidateName(item, k.candidate_id), " · score " + num(k.score)));
    }
    if (!out.length) out.push(el("p", { class: "muted" }, "This prompt gave no DPO pair and no KTO example."));
    return out;
  }

  // One view per ITEM_SECTIONS entry, under its name; views whose name the record lacks are skipped.
  const VIEWS = [
    ["candidates", "Candidates", viewCandidates],
    ["judging", "Judge calls, every order", viewJudging],
    ["debate", "Debate", viewDebate],
    ["exports", "What it exported", viewExports],
  ];

  const SPEAKER = { system: "System", user: "User", assistant: "Assistant" };

  function conversation(item) {
    // the turns before the prompt: the judges and the generator saw them, so the reader does too
    return (item.earlier || []).map((m) =>
      el("div", { class: "turn turn-" + m.role },
        el("span", { class: "speaker" }, SPEAKER[m.role] || m.role), el("pre", { class: "text" }, m.content)));
  }

  function body(item) {
    const parts = [];
    if (item.earlier && item.earlier.length) {
      parts.push(el("h4", {}, "Conversation so far"), el("div", { class: "view view-conversation" }, conversation(item)),
        el("h4", {}, "Last user turn"));
    }
    parts.push(el("pre", { class: "text prompt" }, item.prompt));
    if (item.reference !== null && item.reference !== undefined) {
      parts.push(el("h4", {}, "Reference answer (shown to the judges; never a candidate)"),
        el("pre", { class: "text reference" }, item.reference));
    }
    parts.push(el("p", { class: "why" }, item.why));
    if (item.human) {
      parts.push(el("p", {}, "Human label: " + item.human.human_winner + " (model_a " + item.human.model_a +
        ", model_b " + item.human.model_b + ")"));
    }
    for (const [name, title, view] of VIEWS) {
      if (!(name in item)) continue;
      const content = view(item);
      if (content.length) parts.push(el("h4", {}, title), el("div", { class: "view view-" + name }, content));
    }
    return parts;
  }

  const searchable = (it) => (it._text = it._text ||
    [...(it.earlier || []).map((m) => m.content), it.prompt].join("\n").toLowerCase());

  function row(item) {
    const flags = [badge(item.status, item.status === "ok" ? "good" : "bad")];
    if (item.flags.inconsistent && item.status !== "inconsistent") flags.push(badge("a judge inconsistent", "warn"));
    if (item.flags.split) flags.push(badge(item.n_orders_agreeing + " of " + item.n_orders + " orders agree", "warn"));
    if (item.flags.tie) flags.push(badge("tie", "warn"));
    if (item.flags.dropped) flags.push(badge("dropped candidates", "muted"));
    const details = el("details", {},
      el("summary", {}, flags, " ", el("span", { class: "margin" }, "margin " + num(item.margin)), " ",
        el("span", { class: "preview" }, item.prompt.slice(0, 160))));
    details.addEventListener("toggle", () => {
      if (details.open && !details.dataset.rendered) {
        details.dataset.rendered = "1";
        details.append(el("div", { class: "pair-body" }, body(item)));
      }
    });
    return el("article", { class: "pair", "data-id": item.id, "data-status": item.status }, details);
  }

  // --- filters and pages -------------------------------------------------------------------
  const items = data.items.items;
  const form = document.getElementById("pair-filters");
  const list = document.getElementById("pair-list");
  const count = document.getElementById("pair-count");
  const info = document.getElementById("page-info");
  let page = 0;

  function selected() {
    const f = new FormData(form);
    const maxMargin = parseFloat(f.get("margin_max"));
    const text = (f.get("search") || "").toString().toLowerCase();
    return items.filter((it) =>
      (!f.get("inconsistent") || it.flags.inconsistent) &&
      (!f.get("split") || it.flags.split) &&
      (!f.get("tie") || it.flags.tie) &&
      (!f.get("dropped") || it.flags.dropped) &&
      (!f.get("small_margin") || (it.margin !== null && it.margin <= maxMargin)) &&
      (!f.get("status") || it.status === f.get("status")) &&
      (!text || searchable(it).includes(text) || it.id.includes(text)));
  }

  function show() {
    const chosen = selected();
    const pages = Math.max(1, Math.ceil(chosen.length / PAGE));
    page = Math.min(page, pages - 1);
    list.replaceChildren(...chosen.slice(page * PAGE, (page + 1) * PAGE).map(row));
    count.textContent = chosen.length + " of " + items.length + " prompts" +
      (data.items.total > items.length ? " (the first " + items.length + " of " + data.items.total + " are in this page)" : "");
    info.textContent = "page " + (page + 1) + " of " + pages;
    list.dataset.matching = String(chosen.length);
  }

  form.addEventListener("input", () => { page = 0; show(); });
  form.addEventListener("submit", (e) => e.preventDefault());
  document.getElementById("page-prev").addEventListener("click", () => { page = Math.max(0, page - 1); show(); });
  document.getElementById("page-next").addEventListener("click", () => { page += 1; show(); });
  show();

  Promise.all(pending).then(() => {
    document.body.dataset.charts = String(document.querySelectorAll("[data-chart].drawn").length);
    document.body.dataset.ready = "1";
  });
})();
