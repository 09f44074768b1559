// ComfySage.Report: after a Sage Compare Sampler or Sage Benchmark runs, show its report in
// the node: a table of the runs (or variants), the benchmark's bar chart and recommendation.
// Frontends without DOM widgets get the same report as plain text drawn on the node.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const NODES = new Set(["SageCompareSampler", "SageBenchmark"]);
const STYLE_ID = "comfy-sage-style";
const CSS = `
.comfy-sage-panel { font: 12px/1.35 system-ui, sans-serif; color: var(--fg-color, #ddd); overflow: auto;
  background: var(--comfy-input-bg, #222); border-radius: 6px; padding: 6px; box-sizing: border-box; }
.comfy-sage-panel table { border-collapse: collapse; width: 100%; }
.comfy-sage-panel th, .comfy-sage-panel td { padding: 2px 6px; text-align: right; white-space: nowrap; }
.comfy-sage-panel th:first-child, .comfy-sage-panel td:first-child { text-align: left; }
.comfy-sage-panel th { border-bottom: 1px solid #555; font-weight: 600; }
.comfy-sage-panel .note { color: #aaa; margin: 4px 0; white-space: normal; }
.comfy-sage-panel .fast { color: #6c6; } .comfy-sage-panel .slow { color: #e96; }
.comfy-sage-panel img { max-width: 100%; display: block; margin-top: 6px; }
.comfy-sage-panel .recommended { margin-top: 6px; font-weight: 600; white-space: normal; }
`;

export function ensureStyle() {
  if (document.getElementById(STYLE_ID)) return;
  const style = document.createElement("style");
  style.id = STYLE_ID;
  style.textContent = CSS;
  document.head.appendChild(style);
}

export function num(value, digits = 3, suffix = "") {
  if (value === null || value === undefined) return "-";
  if (typeof value === "string") return value; // "inf" / "NaN" from the server
  return value.toFixed(digits) + suffix;
}

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.appendChild(child);
  return node;
}

function table(header, rows) {
  return el("table", {}, [
    el("thead", {}, [el("tr", {}, header.map((h) => el("th", { text: h })))]),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => (c instanceof Node ? el("td", {}, [c]) : el("td", { text: c })))))),
  ]);
}

function mib(bytes) {
  return typeof bytes === "number" ? `${(bytes / 2 ** 20).toFixed(0)} MiB` : "-";
}

function speedCell(value) {
  const span = el("span", { text: num(value, 2, "x") });
  if (typeof value === "number") span.className = value >= 1 ? "fast" : "slow";
  return span;
}

function compareView(report) {
  const rows = [[report.baseline.label, num(report.baseline.wall_s), num(report.baseline.attention_s), "1.00x", "1.00x",
    mib(report.baseline.peak_bytes), "-", "-", "-", "-"]];
  report.runs.forEach((run, i) => {
    const cmp = report.comparisons[i];
    const stats = run.stats || {};
    const fallbacks = Object.entries(stats.fallback || {}).map(([why, n]) => `${n} ${why}`).join("; ");
    rows.push([run.label, num(run.wall_s), num(run.attention_s), speedCell(cmp.speedup), speedCell(cmp.attention_speedup),
      mib(run.peak_bytes), `${stats.ours ?? 0}/${stats.calls ?? 0}` + (fallbacks ? ` (host: ${fallbacks})` : ""),
      num(cmp.latent.mean_rel_l1, 4), num(cmp.latent.mean_psnr, 1, " dB"),
      cmp.decoded ? `${num(cmp.decoded.mean_psnr, 1, " dB")} / ${num(cmp.decoded.mean_ssim, 4)}` : "no VAE"]);
  });
  return el("div", { class: "comfy-sage-panel comfy-sage-report" }, [
    table(["run", "wall s", "attn s", "speed-up", "attn x", "peak VRAM", "quantized", "latent rel-L1", "latent PSNR", "decoded PSNR / SSIM"], rows),
    el("div", { class: "note", text: `${report.frames} frame(s) · ${report.timing_note}` }),
  ]);
}

function imageURL(image) {
  const params = new URLSearchParams({ filename: image.filename, type: image.type || "temp", subfolder: image.subfolder || "" });
  return api.apiURL(`/view?${params}`);
}

function benchmarkView(data, images) {
  const rows = data.variants.map((v) => [v.variant, num(v.total_ms, 3), num(v.worst_rel_l1, 4),
    v.passes_gate ? (v.quantized ? "within gate" : "PyTorch") : "above gate"]);
  const children = [
    el("div", { class: "note", text: `${data.device} · ${data.source} · shapes: ` +
      data.shapes.map((s) => `${s.label} ×${s.calls}`).join(", ") }),
    table(["variant", "total ms", "worst rel-L1", ""], rows),
  ];
  for (const image of images || []) children.push(el("img", { class: "comfy-sage-chart", src: imageURL(image), alt: "benchmark chart" }));
  children.push(el("div", { class: "recommended", text: "Recommended: " + data.recommended.text }));
  return el("div", { class: "comfy-sage-panel comfy-sage-benchmark" }, children);
}

// The panel lives in one DOM widget per node, replaced on every run.
export function showPanel(node, name, element, height, width = 620) {
  if (typeof node.addDOMWidget !== "function") return false;
  ensureStyle();
  let widget = node.widgets?.find((w) => w.name === name);
  if (!widget) {
    const holder = el("div", { class: "comfy-sage-holder" });
    widget = node.addDOMWidget(name, "comfy-sage-panel", holder, { serialize: false, hideOnZoom: false,
      getMinHeight: () => node.__sageHeight ?? 120 });
  }
  node.__sageHeight = height;
  widget.element.replaceChildren(element);
  const size = node.computeSize();
  node.setSize([Math.max(node.size[0], width), Math.max(node.size[1], size[1])]);
  node.setDirtyCanvas?.(true, true);
  return true;
}

// Plain-text fallback: draw the lines under the widgets (LiteGraph's canvas API only).
export function showText(node, text) {
  node.__sageText = String(text || "").split("\n");
  if (!node.__sageDraws) {
    node.__sageDraws = true;
    const draw = node.onDrawForeground;
    node.onDrawForeground = function (ctx) {
      draw?.apply(this, arguments);
      if (!this.__sageText || this.flags?.collapsed) return;
      ctx.save();
      ctx.font = "11px monospace";
      ctx.fillStyle = "#ccc";
      const top = this.size[1] - this.__sageText.length * 13 - 4;
      this.__sageText.forEach((line, i) => ctx.fillText(line, 8, top + i * 13));
      ctx.restore();
    };
  }
  node.setSize([Math.max(node.size[0], 640), node.size[1] + node.__sageText.length * 13]);
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "ComfySage.Report",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES.has(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = message?.text?.[0];
      try {
        let shown = false;
        if (message?.sage_report?.[0]) {
          shown = showPanel(this, "sage_report", compareView(message.sage_report[0]), 150, 1000);
        } else if (message?.sage_benchmark?.[0]) {
          shown = showPanel(this, "sage_report", benchmarkView(message.sage_benchmark[0], message.sage_chart), 560, 640);
        }
        if (!shown && text) showText(this, text);
      } catch (error) {
        console.warn("comfy-sage: could not render the report; showing it as text", error);
        if (text) showText(this, text);
      }
    };
  },
});
