"""The family tree of a run: every model and dataset in its lineage as one self-contained HTML page.

``sublearn show RUN --graph FILE.html``. Nodes are the bases, teachers, generated and filtered datasets and students,
laid out in columns by stage; an edge runs from each parent to its child and carries the parent dataset's hash and
the filter that made it. A model is coloured by its measured trait (the first metric of its evaluations, mean over
them); a click shows a node's full lineage record (``FILE.html#key=PREFIX`` opens with that node shown). The page needs no server and no network: the data and the code
that draws it are inline.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from ..store import Record, Store, write_atomic

STAGES = ("base", "teacher", "generate", "filter", "finetune")  # columns, left to right
MODELS = ("base", "teacher", "finetune")


def _metric(run: Path) -> tuple[str, str]:
    """(key in each question's result, label) of the run's first scorer; P(target) when the config cannot load."""
    try:
        from ..config import load_experiment
        from .results import metrics

        cfg = load_experiment(str(run), [])
        m = next(iter(metrics(cfg).values()))
        return m["key"], f"{m['label']} ({cfg.trait.label()})"
    except Exception:  # noqa: BLE001 - a run from another version still gets its tree, with the default metric
        return "prob", "P(target)"


def _measured(recs: list[Record], key: str) -> dict[str, list[float]]:
    """Model key -> the metric of each evaluation of that model alone (not in-context ones, which have two parents)."""
    out: dict[str, list[float]] = {}
    for r in recs:
        if r.stage != "evaluate" or len(r.parents) != 1:
            continue
        p = Path(r.path) / "eval.json"
        if not p.exists():
            continue
        qs = json.loads(p.read_text()).get("questions") or []
        vals = [q[key] for q in qs if isinstance(q.get(key), (int, float))]
        if vals:
            out.setdefault(r.parents[0], []).append(sum(vals) / len(vals))
    return out


def _edge_label(parent: Record) -> str:
    if parent.stage == "filter":
        f = parent.config.get("filter", {})
        what = ", ".join(f"{k}={v}" for k, v in f.items() if v not in (None, [], False)) or "defaults"
        kept = parent.extra.get("kept")
        return f"dataset {parent.key[:10]} (filter: {what}{f'; {kept} rows kept' if kept is not None else ''})"
    if parent.stage == "generate":
        return f"raw data {parent.key[:10]}"
    return f"{parent.stage} {parent.key[:10]}"


def build_graph(run: Path) -> dict:
    """Nodes (key, stage, name, seed, model, trait value, audit mark, record) and edges (parent, child, label)."""
    from ..audit.lineage import marks

    recs = Store(run).records()
    key, label = _metric(run)
    measured = _measured(recs, key)
    audit = marks(recs)
    shown = {r.key: r for r in recs if r.stage in STAGES}
    nodes = []
    for r in sorted(shown.values(), key=lambda r: (STAGES.index(r.stage), -1 if r.seed is None else r.seed, r.name)):
        vals = measured.get(r.key)
        nodes.append({"key": r.key, "stage": r.stage, "name": r.name, "seed": r.seed, "model": r.model,
                      "value": sum(vals) / len(vals) if vals else None, "evaluations": len(vals or []),
                      "audit": audit.get(r.key), "record": {k: v for k, v in r.__dict__.items() if k != "extra"}
                      | {"extra": {k: v for k, v in r.extra.items() if k != "machine"}}})
    edges = [{"from": p, "to": r.key, "label": _edge_label(shown[p])}
             for r in shown.values() for p in r.parents if p in shown]
    return {"run": str(run), "metric": label, "nodes": nodes, "edges": edges}


def write_graph_html(graph: dict, path: Path) -> None:
    data = json.dumps(graph, default=str).replace("</", "<\\/")  # no "</script>" inside the inline JSON
    page = _PAGE.replace("__TITLE__", html.escape(f"Family tree of {graph['run']}")).replace("__DATA__", data)
    write_atomic(path, page)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font: 13px system-ui, sans-serif; margin: 0; display: flex; height: 100vh; }
#main { flex: 1; overflow: auto; padding: 8px; }
#side { width: 24%; border-left: 1px solid #ccc; padding: 8px; overflow: auto; background: #fafafa; }
pre { white-space: pre-wrap; font-size: 11px; }
.node { cursor: pointer; } .node text { font-size: 10px; pointer-events: none; }
.edge { stroke: #999; stroke-width: 1; fill: none; } .edge:hover { stroke: #000; stroke-width: 2; }
.dim { opacity: 0.12; } .flag { stroke: #c00; stroke-width: 3; }
</style></head><body>
<div id="main"><h3>__TITLE__</h3>
<label>seed <select id="seed"></select></label>
<span id="legend"></span>
<svg id="tree" xmlns="http://www.w3.org/2000/svg"></svg></div>
<div id="side"><b>Click a node or an edge</b> to see its record.<pre id="record"></pre></div>
<script id="graph" type="application/json">__DATA__</script>
<script>
"use strict";
const G = JSON.parse(document.getElementById("graph").textContent);
const STAGES = ["base", "teacher", "generate", "filter", "finetune"];
const NS = "http://www.w3.org/2000/svg";
const byKey = {};
G.nodes.forEach(n => byKey[n.key] = n);
const vals = G.nodes.map(n => n.value).filter(v => v !== null);
const lo = vals.length ? Math.min(...vals) : 0, hi = vals.length ? Math.max(...vals) : 1;
function colour(v) {
  if (v === null) return "#e8e8e8";
  const t = hi > lo ? (v - lo) / (hi - lo) : 0.5;
  return `rgb(${Math.round(255 - 40 * t)},${Math.round(245 - 180 * t)},${Math.round(235 - 200 * t)})`;
}
function el(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}
function show(obj) { document.getElementById("record").textContent = JSON.stringify(obj, null, 1); }
const svg = document.getElementById("tree");
const colW = 188, rowH = 24, W = 158, H = 18;
const pos = {};
STAGES.forEach((s, c) => {
  G.nodes.filter(n => n.stage === s).forEach((n, i) => pos[n.key] = [20 + c * colW, 30 + i * rowH]);
});
const rows = Math.max(1, ...STAGES.map(s => G.nodes.filter(n => n.stage === s).length));
svg.setAttribute("width", 40 + STAGES.length * colW);
svg.setAttribute("height", 50 + rows * rowH);
STAGES.forEach((s, c) => { const t = el("text", {x: 20 + c * colW, y: 16, "font-weight": "bold"}, svg); t.textContent = s; });
const edgeEls = G.edges.map(e => {
  const [x1, y1] = pos[e.from], [x2, y2] = pos[e.to];
  const p = el("path", {class: "edge", d: `M${x1 + W},${y1 + H / 2} C${x1 + W + 30},${y1 + H / 2} ${x2 - 30},${y2 + H / 2} ${x2},${y2 + H / 2}`,
                        "data-label": e.label}, svg);
  el("title", {}, p).textContent = e.label;
  p.addEventListener("click", () => show({edge: e.label, from: byKey[e.from].name, to: byKey[e.to].name}));
  return [e, p];
});
const nodeEls = G.nodes.map(n => {
  const [x, y] = pos[n.key];
  const g = el("g", {class: "node", transform: `translate(${x},${y})`, "data-key": n.key}, svg);
  el("rect", {width: W, height: H, rx: 4, fill: colour(n.value), stroke: "#555",
              class: n.audit === "FLAGGED" || n.audit === "from flagged data" ? "flag" : ""}, g);
  const t = el("text", {x: 4, y: 13}, g);
  t.textContent = n.name + (n.value !== null ? ` ${n.value.toFixed(3)}` : "");
  el("title", {}, g).textContent = `${n.name} (${n.stage}, key ${n.key.slice(0, 10)})` +
    (n.value !== null ? `: ${G.metric} ${n.value.toFixed(4)} over ${n.evaluations} evaluation(s)` : "") +
    (n.audit ? `; audit: ${n.audit}` : "");
  g.addEventListener("click", () => show(n));
  return [n, g];
});
const seeds = [...new Set(G.nodes.map(n => n.seed).filter(s => s !== null))].sort((a, b) => a - b);
const sel = document.getElementById("seed");
["all", ...seeds].forEach(s => { const o = document.createElement("option"); o.value = o.textContent = s; sel.appendChild(o); });
sel.addEventListener("change", () => {
  const s = sel.value;
  const on = k => s === "all" || byKey[k].seed === null || String(byKey[k].seed) === s;
  nodeEls.forEach(([n, g]) => g.classList.toggle("dim", !on(n.key)));
  edgeEls.forEach(([e, p]) => p.classList.toggle("dim", !(on(e.from) && on(e.to))));
});
document.getElementById("legend").textContent = vals.length ?
  ` colour: ${G.metric}, from ${lo.toFixed(3)} (light) to ${hi.toFixed(3)} (dark); grey: not measured; red border: flagged by an audit or trained from flagged data.` : " no evaluations yet.";
const wanted = location.hash.startsWith("#key=") ? location.hash.slice(5) : null;  // a link to one node
if (wanted) {
  const hit = nodeEls.find(([n]) => n.key.startsWith(wanted));
  if (hit) hit[1].dispatchEvent(new MouseEvent("click", {bubbles: true}));
}
document.body.dataset.nodes = String(nodeEls.length);
document.body.dataset.edges = String(edgeEls.length);
</script></body></html>
"""
