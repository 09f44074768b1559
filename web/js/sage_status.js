// ComfySage.Status: on each Sage Attention node, which backend and variant will run on this
// machine (from the pack's /comfy_sage/status route) and, after a prompt ran, what the node's
// override did: calls quantized, on which backend, and why the others kept ComfyUI's attention.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { showPanel, showText } from "./sage_report.js";

const NODE = "SageAttention";
let status = null; // the last /comfy_sage/status answer

async function refresh() {
  try {
    const response = await api.fetchApi("/comfy_sage/status");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    status = await response.json();
  } catch (error) {
    console.warn("comfy-sage: status route unavailable", error);
    status = null;
  }
  for (const node of app.graph?._nodes ?? []) if (node.comfyClass === NODE || node.type === NODE) render(node);
}

function widgetValue(node, name) {
  return node.widgets?.find((w) => w.name === name)?.value;
}

function plannedLine(node) {
  if (!status) return "comfy-sage: status unavailable (is the server running this pack?)";
  const backend = widgetValue(node, "backend") ?? "auto";
  const variant = widgetValue(node, "variant") ?? "auto";
  const machine = status.machine;
  const gpu = status.info.gpu ? `${status.info.gpu} (${status.info.capability})` : "the CPU (no GPU)";
  if (backend === "off") return `Off: the model passes through unchanged. Machine: ${gpu}.`;
  if (backend === "auto") return `Will run (auto, ${gpu}): ${machine.auto}`;
  const b = machine.backends[backend];
  if (!b || !b.available) return `Backend ${backend} cannot run here: ${b?.why_not ?? "unknown"}; calls keep ComfyUI's attention.`;
  const chosen = variant === "auto" ? b.default_variant : variant;
  const ok = b.variants.includes(chosen);
  return `Will run: ${backend} ${chosen}${ok ? "" : " (not available here: " + b.variants.join(", ") + ")"} on ${gpu}.`;
}

function resultLines(node) {
  const entry = status?.nodes?.[String(node.id)];
  if (!entry || !entry.last_run?.calls) return ["Not run yet: queue a prompt that samples with this model."];
  const run = entry.last_run;
  const backends = Object.entries(run.backends || {}).map(([b, n]) => `${b} ${n}`).join(", ");
  const lines = [`Last run: ${run.ours}/${run.calls} attention calls quantized` + (backends ? ` (${backends})` : "") + "."];
  for (const [why, n] of Object.entries(run.fallback || {})) lines.push(`ComfyUI's attention for ${n} call(s) ${why}.`);
  return lines;
}

function render(node) {
  const lines = [plannedLine(node), ...resultLines(node)];
  const div = document.createElement("div");
  div.className = "comfy-sage-panel comfy-sage-status";
  for (const line of lines) {
    const p = document.createElement("div");
    p.textContent = line;
    div.appendChild(p);
  }
  if (!showPanel(node, "sage_status", div, 24 + 18 * lines.length)) showText(node, lines.join("\n"));
}

app.registerExtension({
  name: "ComfySage.Status",
  async setup() {
    // One listener for the whole app: after any prompt finishes, every Sage Attention node updates.
    api.addEventListener("execution_success", refresh);
    await refresh();
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      onNodeCreated?.apply(this, arguments);
      for (const name of ["backend", "variant"]) {
        const widget = this.widgets?.find((w) => w.name === name);
        if (!widget) continue;
        const callback = widget.callback;
        widget.callback = (...args) => {
          callback?.apply(widget, args);
          render(this);
        };
      }
      queueMicrotask(() => render(this));
    };
  },
});
