"""Write the pack's example workflows (workflows/*.json, UI format) and their API-format twins
(workflows/api/*.json) from ComfyUI's official templates.

    pip install comfyui-workflow-templates-json==<TEMPLATES_VERSION>
    python tools/make_workflows.py                      # from the node definitions in tools/object_info.json
    python tools/make_workflows.py --object-info http://127.0.0.1:8188   # refresh those from a running ComfyUI
                                                                        # (with this pack loaded) first
    python tools/make_workflows.py --check               # exit 1 if any committed file differs

Each workflow is its template with a Sage Attention node on every MODEL link that leaves the
model loaders (loader, LoRA, or a switch between them) for the rest of the graph, inside
subgraphs where the template keeps its loaders there, and a note listing the model files and
the folders they go in. Nothing else in the template changes, except the rewrites in
HOST_COMPAT (what ComfyUI 0.8.0, the oldest host we test, cannot load as saved) and a spec's
own transform (the compare workflow's sampler).
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib.metadata
import importlib.resources
import json
import math
import re
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from comfy_sage.comfy.workflow_api import (SUBGRAPH_INPUT_NODE, SUBGRAPH_OUTPUT_NODE, node_types,  # noqa: E402
                                           socket_inputs, to_api, widget_slots)

# The templates are pinned: a new package version may use nodes an older ComfyUI lacks (see
# HOST_COMPAT). Raise it, run this script, run tests/comfy/test_workflows.py.
TEMPLATES_PACKAGE = "comfyui-workflow-templates-json"
TEMPLATES_VERSION = "0.1.123"
HOST = "ComfyUI 0.8.0"

OUT = REPO / "workflows"
API_OUT = OUT / "api"
OBJECT_INFO = REPO / "tools" / "object_info.json"
SAGE = "SageAttention"
COMPARE = "SageCompareSampler"


class Spec:
    def __init__(self, name, template, title, transform=None):
        self.name, self.template, self.title, self.transform = name, template, title, transform


WORKFLOWS = [
    Spec("wan2.1_t2v_1.3B", "text_to_video_wan", "Wan 2.1 text-to-video 1.3B"),
    Spec("wan2.1_i2v_14B_480p", "image_to_video_wan", "Wan 2.1 image-to-video 14B 480p"),
    Spec("wan2.2_t2v_14B", "video_wan2_2_14B_t2v", "Wan 2.2 text-to-video 14B (high- and low-noise models)"),
    Spec("wan2.2_ti2v_5B", "video_wan2_2_5B_ti2v", "Wan 2.2 text/image-to-video 5B"),
    Spec("hunyuan_video_t2v", "hunyuan_video_text_to_video", "HunyuanVideo text-to-video"),
    Spec("ltxv_t2v", "ltxv_text_to_video", "LTX-Video text-to-video"),
    Spec("flux_dev_t2i", "flux_dev_full_text_to_image", "Flux.1 dev text-to-image"),
    Spec("sdxl_t2i", "image_sdxl_simple", "SDXL text-to-image"),
    Spec("qwen_image_t2i", "image_qwen_image", "Qwen-Image text-to-image"),
    Spec("compare_wan2.1_t2v_1.3B", "text_to_video_wan", "Sage Compare Sampler on Wan 2.1 text-to-video 1.3B",
         transform=lambda workflow, object_info, ids: compare_sampler(workflow, object_info, ids)),
]

# Nodes that produce a diffusion model: the Sage node goes after the last of them on each path.
MODEL_SOURCES = {"UNETLoader", "CheckpointLoaderSimple", "LoraLoaderModelOnly", "LoraLoader", "ComfySwitchNode"}
# Where each loader's file goes (ComfyUI's folder_paths names; the comfy tests check these folders).
MODEL_FOLDERS = {
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("LoraLoader", "lora_name"): "loras",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
}
# Other combos whose options are the host's files (input images).
HOST_FILE_LISTS = [("LoadImage", "image")]


# -- reading ------------------------------------------------------------------------------------------


def templates_dir():
    try:
        version = importlib.metadata.version(TEMPLATES_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"{TEMPLATES_PACKAGE} is not installed: pip install {TEMPLATES_PACKAGE}=={TEMPLATES_VERSION}")
    if version != TEMPLATES_VERSION:
        raise SystemExit(f"{TEMPLATES_PACKAGE} {version} is installed, this script is pinned to {TEMPLATES_VERSION}: "
                         f"pip install {TEMPLATES_PACKAGE}=={TEMPLATES_VERSION} (or raise the pin, see its comment)")
    return importlib.resources.files("comfyui_workflow_templates_json") / "templates"


def load_template(name):
    return json.loads((templates_dir() / f"{name}.json").read_text(encoding="utf-8"))


def fetch_object_info(source):
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source.rstrip("/") + "/object_info", timeout=60) as r:
            return json.loads(r.read())
    return json.loads(Path(source).read_text())


def trim_object_info(object_info, types):
    """The definitions of ``types`` without their help texts: what conversion and checks read."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("tooltip", "description", "output_tooltips")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    missing = sorted(t for t in types if t not in object_info)
    if missing:
        raise SystemExit(f"the host's /object_info has no {', '.join(missing)}: is this pack loaded?")
    out = {t: strip(object_info[t]) for t in sorted(types)}
    # File lists are the generating host's files, not part of the node's definition.
    for kind, widget in [*MODEL_FOLDERS, *HOST_FILE_LISTS]:
        spec = (out.get(kind) or {}).get("input", {}).get("required", {}).get(widget)
        if spec is None:
            continue
        if isinstance(spec[0], list):
            spec[0] = []
        elif len(spec) > 1 and "options" in spec[1]:
            spec[1]["options"] = []
    return out


# -- one level of a graph (the workflow or a subgraph definition) ----------------------------------------


class Level:
    """Uniform edits on the top graph (links as lists) and subgraphs (links as dicts)."""

    def __init__(self, holder, top):
        self.holder, self.top = holder, top

    @property
    def nodes(self):
        return self.holder["nodes"]

    def node(self, node_id):
        return next((n for n in self.nodes if n["id"] == node_id), None)

    def links(self):
        for link in self.holder.get("links") or ():
            if isinstance(link, dict):
                yield link["id"], link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"]
            else:
                yield tuple(link[:5])

    def add_link(self, link_id, origin, origin_slot, target, target_slot, kind):
        if self.top:
            self.holder["links"].append([link_id, origin, origin_slot, target, target_slot, kind])
        else:
            self.holder["links"].append({"id": link_id, "origin_id": origin, "origin_slot": origin_slot,
                                         "target_id": target, "target_slot": target_slot, "type": kind})

    def set_origin(self, link_id, origin, origin_slot):
        for link in self.holder["links"]:
            if isinstance(link, dict) and link["id"] == link_id:
                link["origin_id"], link["origin_slot"] = origin, origin_slot
            elif isinstance(link, list) and link[0] == link_id:
                link[1], link[2] = origin, origin_slot

    def remove_links(self, ids):
        self.holder["links"] = [l for l in self.holder["links"] if (l["id"] if isinstance(l, dict) else l[0]) not in ids]
        for node in self.nodes:
            for slot in node.get("inputs") or ():
                if slot.get("link") in ids:
                    slot["link"] = None
            for slot in node.get("outputs") or ():
                if slot.get("links"):
                    slot["links"] = [i for i in slot["links"] if i not in ids]


def levels(workflow):
    yield Level(workflow, True)
    for sg in (workflow.get("definitions") or {}).get("subgraphs") or ():
        yield Level(sg, False)


class Ids:
    """New node and link ids above every id in use (the front end shares counters across subgraphs)."""

    def __init__(self, workflow):
        self.workflow = workflow
        nodes = [n["id"] for lv in levels(workflow) for n in lv.nodes]
        links = [l[0] for lv in levels(workflow) for l in lv.links()]
        self.node = max([workflow.get("last_node_id", 0), *nodes])
        self.link = max([workflow.get("last_link_id", 0), *links])

    def new_node(self):
        self.node += 1
        return self.node

    def new_link(self):
        self.link += 1
        return self.link

    def commit(self):
        self.workflow["last_node_id"], self.workflow["last_link_id"] = self.node, self.link
        for lv in levels(self.workflow):
            if not lv.top and "state" in lv.holder:
                lv.holder["state"]["lastNodeId"] = max(lv.holder["state"].get("lastNodeId", 0), self.node)
                lv.holder["state"]["lastLinkId"] = max(lv.holder["state"].get("lastLinkId", 0), self.link)


# -- rewrites ----------------------------------------------------------------------------------------------


_MATH = {"floor": math.floor, "ceil": math.ceil, "round": round, "min": min, "max": max, "abs": abs}


def _evaluate(expression, names):
    tree = ast.parse(expression, mode="eval")
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Call, ast.Name, ast.Load, ast.Constant, ast.operator,
               ast.unaryop)
    for part in ast.walk(tree):
        if not isinstance(part, allowed):
            raise SystemExit(f"ComfyMathExpression {expression!r}: {type(part).__name__} is not supported here")
    return eval(compile(tree, "<expression>", "eval"), {"__builtins__": {}, **_MATH}, names)  # noqa: S307


def math_to_primitive(workflow, ids, object_info):
    """ComfyMathExpression is newer than ComfyUI 0.8.0. Where its inputs are constants (primitive
    nodes), it becomes a PrimitiveInt holding the result; the now unused primitives stay.
    Returns a sentence per replaced node for the workflow's note."""
    remarks = []
    for lv in levels(workflow):
        for node in lv.nodes:
            if node["type"] != "ComfyMathExpression":
                continue
            incoming = {lid: (o, os_) for lid, o, os_, t, ts in lv.links() if t == node["id"]}
            names = {}
            for slot in node.get("inputs") or ():
                if slot.get("link") is None:
                    continue
                origin = lv.node(incoming[slot["link"]][0])
                # A primitive's value input may be promoted to the subgraph node: its widget holds the value.
                if origin is None or origin["type"] not in ("PrimitiveInt", "PrimitiveFloat"):
                    raise SystemExit(f"ComfyMathExpression {node['id']}: input {slot['name']} is not a constant")
                names[slot["name"].split(".")[-1]] = origin["widgets_values"][0]
            expression = node["widgets_values"][0]
            value = int(_evaluate(expression, names))
            outputs = node.get("outputs") or []
            int_slot = next(i for i, o in enumerate(outputs) if o["type"] == "INT")
            if any(o.get("links") for i, o in enumerate(outputs) if i != int_slot):
                raise SystemExit(f"ComfyMathExpression {node['id']}: only its INT output can be replaced")
            lv.remove_links(set(incoming))
            users = outputs[int_slot].get("links") or []
            fed = sorted({f"{lv.node(t)['type']}.{lv.node(t)['inputs'][ts]['name']}"
                          for lid, o, os_, t, ts in lv.links() if lid in users})
            for lid in users:
                lv.set_origin(lid, node["id"], 0)
            title = f"{expression} = {value} (fixed)"
            node.update(type="PrimitiveInt", title=title, inputs=[], widgets_values=[value, "fixed"],
                        outputs=[{"name": "INT", "type": "INT", "links": users}],
                        properties={"Node name for S&R": "PrimitiveInt"})
            remarks.append(f"The template computes {', '.join(fed)} as `{expression}` "
                           f"({', '.join(f'{k} = {v}' for k, v in sorted(names.items()))}) with a math node that "
                           f"{HOST} does not have: here it is the constant {value} in the node \"{title}\""
                           f"{'' if lv.top else ' (inside the subgraph)'}; change it there, the inputs it was computed from no longer do.")
    return remarks


def frontend_input_order(workflow, ids, object_info):
    """Lay out the inputs of every node that has a linked widget input the way ComfyUI 0.8.0's
    frontend (1.35) builds them: link-only inputs, then every widget, each in definition order.
    Templates save shorter lists; on load that frontend moves the links to the new slot numbers
    and, where an old and a new number collide, drops one (in the Wan 2.2 template the low-noise
    sampler lost its cfg link and sampled at cfg 1 instead of 3.5)."""
    for lv in levels(workflow):
        for node in lv.nodes:
            definition = object_info.get(node["type"])
            inputs = node.get("inputs") or []
            if definition is None or not any(i.get("widget") and i.get("link") is not None for i in inputs):
                continue
            by_name = {i["name"]: i for i in inputs}
            widgets = [n for n in widget_slots(definition) if n]
            names = socket_inputs(definition) + widgets
            specs = {**definition["input"].get("required", {}), **definition["input"].get("optional", {})}
            extra = [i for i in inputs if i["name"] not in names]
            if extra:
                raise SystemExit(f"node {node['id']} ({node['type']}): inputs {[i['name'] for i in extra]} are not in "
                                 f"its definition")
            laid_out = []
            for name in names:
                entry = dict(by_name.get(name) or {"name": name, "link": None})
                kind = specs[name][0]
                entry.setdefault("type", "COMBO" if isinstance(kind, list) else kind)
                if name in widgets:
                    entry["widget"] = {"name": name}
                laid_out.append(entry)
            slot_of = {e["name"]: i for i, e in enumerate(laid_out)}
            moved = {i["link"]: slot_of[i["name"]] for i in inputs if i.get("link") is not None}
            for link in lv.holder["links"]:
                if isinstance(link, dict) and link["id"] in moved:
                    link["target_slot"] = moved[link["id"]]
                elif isinstance(link, list) and link[0] in moved:
                    link[4] = moved[link[0]]
            node["inputs"] = laid_out
    return []


HOST_COMPAT = [math_to_primitive, frontend_input_order]


def compare_sampler(workflow, object_info, ids):
    """The template's KSampler becomes a Sage Compare Sampler with the same settings and the
    template's VAE; its side-by-side frames (ComfyUI's attention left, Sage right) replace the
    decoded frames in the template's video output."""
    lv = Level(workflow, True)
    (sampler,) = [n for n in lv.nodes if n["type"] == "KSampler"]
    (decode,) = [n for n in lv.nodes if n["type"] == "VAEDecode"]
    (vae_loader,) = [n for n in lv.nodes if n["type"] == "VAELoader"]
    definition = object_info[COMPARE]
    old = dict(zip(widget_slots(object_info["KSampler"]), sampler["widgets_values"]))
    slots = widget_slots(definition)
    specs = {**definition["input"]["required"], **definition["input"].get("optional", {})}
    values = []
    for i, name in enumerate(slots):
        if name is None:  # the seed's control value
            values.append(sampler["widgets_values"][1])
        else:
            values.append(old[name] if name in old else specs[name][1].get("default"))
    by_name = {i["name"]: i for i in sampler["inputs"]}
    linked = socket_inputs(definition)
    decoded_links = (decode["outputs"][0].get("links") or [])
    into_decode = [i["link"] for i in decode["inputs"] if i.get("link") is not None]
    lv.remove_links(set(into_decode))
    lv.nodes.remove(decode)
    vae_link = ids.new_link()
    inputs = []
    for slot, name in enumerate(linked):
        link = by_name[name]["link"] if name in by_name else (vae_link if name == "vae" else None)
        inputs.append({"name": name, "type": specs[name][0], "link": link})
        for lid, o, os_, t, ts in list(lv.links()):
            if lid == link and ts != slot:
                _retarget(lv, lid, slot)
    lv.add_link(vae_link, vae_loader["id"], 0, sampler["id"], linked.index("vae"), "VAE")
    vae_loader["outputs"][0]["links"].append(vae_link)
    frames_slot = definition["output_name"].index("frames_side_by_side")
    outputs = [{"name": name, "type": kind, "links": []} for name, kind in zip(definition["output_name"],
                                                                               definition["output"])]
    for lid in decoded_links:
        lv.set_origin(lid, sampler["id"], frames_slot)
    outputs[frames_slot]["links"] = list(decoded_links)
    sampler.update(type=COMPARE, title="Sage Compare Sampler", inputs=inputs, outputs=outputs,
                   widgets_values=values, properties={"Node name for S&R": COMPARE, "cnr_id": "comfy-sage"},
                   size=[340, 420])
    return ["The template's KSampler is a **Sage Compare Sampler** with the same settings: it samples once with "
            "ComfyUI's attention and once with the Sage Attention node's, from the same noise, and the video it "
            "writes shows both, ComfyUI's left and Sage's right; its report gives the speed-up and the difference."]


def _retarget(lv, link_id, target_slot):
    for link in lv.holder["links"]:
        if isinstance(link, list) and link[0] == link_id:
            link[4] = target_slot


def insert_sage(workflow, sage_definition, ids):
    """A Sage Attention node on each model-source output that feeds anything but another source.
    Returns the ids of the inserted nodes."""
    values = [sage_definition["input"]["required"][name][1].get("default") if name else None
              for name in widget_slots(sage_definition)]
    inserted = []
    for lv in levels(workflow):
        consumers = {}
        for lid, origin, oslot, target, tslot in lv.links():
            o, t = lv.node(origin), lv.node(target)
            if o is None or o["type"] not in MODEL_SOURCES or o["outputs"][oslot]["type"] not in ("MODEL", "*"):
                continue
            if o["type"] == "ComfySwitchNode" and not _switches_models(lv, o):
                continue
            if target == SUBGRAPH_OUTPUT_NODE or (t is not None and t["type"] in MODEL_SOURCES):
                continue
            consumers.setdefault((origin, oslot), []).append(lid)
        for (origin, oslot), link_ids in sorted(consumers.items()):
            source = lv.node(origin)
            node_id, in_link = ids.new_node(), ids.new_link()
            for lid in link_ids:
                lv.set_origin(lid, node_id, 0)
            out_links = source["outputs"][oslot]["links"]
            source["outputs"][oslot]["links"] = [i for i in out_links if i not in link_ids] + [in_link]
            lv.add_link(in_link, origin, oslot, node_id, 0, "MODEL")
            lv.nodes.append({
                "id": node_id, "type": SAGE, "pos": _free_spot(lv, source), "size": [320, 330], "flags": {},
                "order": source.get("order", 0), "mode": 0,
                "inputs": [{"name": "model", "type": "MODEL", "link": in_link}],
                "outputs": [{"name": "MODEL", "type": "MODEL", "links": list(link_ids)}],
                "title": "Sage Attention", "properties": {"Node name for S&R": SAGE, "cnr_id": "comfy-sage"},
                "widgets_values": list(values),
            })
            inserted.append(node_id)
    return inserted


def _switches_models(lv, switch):
    types = set()
    for lid, origin, oslot, target, tslot in lv.links():
        if target == switch["id"] and switch["inputs"][tslot]["name"] != "switch":
            o = lv.node(origin)
            if o is not None:
                types.add(o["outputs"][oslot]["type"])
    return types == {"MODEL"}


def _free_spot(lv, source):
    x, y = source["pos"][0], source["pos"][1]
    w, h = (source.get("size") or [300, 100])[:2]
    y += h + 60
    for _ in range(40):
        clash = any(n is not source and n["pos"][0] < x + 320 and x < n["pos"][0] + (n.get("size") or [300, 100])[0]
                    and n["pos"][1] < y + 330 and y < n["pos"][1] + (n.get("size") or [300, 100])[1]
                    for n in lv.nodes if isinstance(n.get("pos"), list))
        if not clash:
            break
        y += 60
    return [x, y]


def model_files(workflow):
    """(file, folder, download URL or '') for each loader widget, in the template's order. The URL
    comes from the loader's ``properties.models`` (what the front end offers to download), else
    from a link to that file in the template's notes."""
    notes = " ".join(str(v) for lv in levels(workflow) for n in lv.nodes if n["type"] in ("MarkdownNote", "Note")
                     for v in n.get("widgets_values") or ())
    seen, out = set(), []
    for lv in levels(workflow):
        for node in lv.nodes:
            if node.get("mode", 0) != 0:
                continue
            listed = {m["name"]: m for m in (node.get("properties") or {}).get("models") or ()}
            for (kind, widget), folder in MODEL_FOLDERS.items():
                if node["type"] != kind:
                    continue
                name = node["widgets_values"][_SLOTS[kind].index(widget)]
                if name in seen:
                    continue
                seen.add(name)
                entry = listed.get(name)
                if entry is not None and entry.get("directory") not in (None, folder):
                    raise SystemExit(f"{name}: the template says models/{entry['directory']}, MODEL_FOLDERS says "
                                     f"models/{folder}")
                url = entry.get("url", "") if entry else ""
                if not url:
                    found = re.search(r"https://[^\s)\]]*/" + re.escape(name) + r"(\?download=true)?", notes)
                    url = found.group(0) if found else ""
                out.append((name, folder, url))
    return out


_SLOTS = {}


def model_note(spec, files, sage_count, remarks):
    rows = "\n".join(f"| `{name}` | `ComfyUI/models/{folder}/` | " + (f"[download]({url})" if url else "see the "
                     "template's notes") + " |" for name, folder, url in files)
    nodes = "node" if sage_count == 1 else "node on each model"
    return (f"## comfy-sage: {spec.title}\n\n"
            f"ComfyUI's official template `{spec.template}` ({TEMPLATES_PACKAGE} {TEMPLATES_VERSION}) with "
            f"a **Sage Attention** {nodes} between the model loader and the sampler. Set its backend to `off` to "
            f"compare with ComfyUI's own attention.\n\n"
            + "".join(f"{r}\n\n" for r in remarks)
            + f"### Model files\n\n| file | put it in | |\n| --- | --- | --- |\n{rows}\n")


def build(spec, object_info):
    workflow = load_template(spec.template)
    ids = Ids(workflow)
    remarks = [r for rewrite in HOST_COMPAT for r in rewrite(workflow, ids, object_info)]
    if spec.transform is not None:
        remarks += spec.transform(workflow, object_info, ids)
    sages = insert_sage(workflow, object_info[SAGE], ids)
    if not sages:
        raise SystemExit(f"{spec.template}: no model loader found to put the Sage Attention node after")
    top = Level(workflow, True)
    xs = [n["pos"][0] for n in top.nodes if isinstance(n.get("pos"), list)]
    ys = [n["pos"][1] for n in top.nodes if isinstance(n.get("pos"), list)]
    note = {"id": ids.new_node(), "type": "MarkdownNote", "pos": [min(xs) - 760, min(ys)], "size": [720, 420],
            "flags": {}, "order": 0, "mode": 0, "inputs": [], "outputs": [], "title": "comfy-sage: model files",
            "properties": {}, "widgets_values": [model_note(spec, model_files(workflow), len(sages), remarks)],
            "color": "#432", "bgcolor": "#653"}
    top.nodes.append(note)
    ids.commit()
    workflow.setdefault("extra", {})["comfy_sage"] = {"template": spec.template, "templates_package":
                                                      f"{TEMPLATES_PACKAGE}=={TEMPLATES_VERSION}"}
    return workflow


def dump(data):
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def render(object_info):
    """{path: text} of every file this script writes."""
    global _SLOTS
    _SLOTS = {kind: widget_slots(object_info[kind]) for kind, _ in MODEL_FOLDERS if kind in object_info}
    files = {}
    for spec in WORKFLOWS:
        workflow = build(spec, object_info)
        files[OUT / f"{spec.name}.json"] = dump(workflow)
        files[API_OUT / f"{spec.name}.json"] = dump(to_api(workflow, object_info))
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--object-info", help="a running ComfyUI's URL or an /object_info JSON file: refresh "
                                              f"{OBJECT_INFO.relative_to(REPO)} from it first")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a committed file differs")
    args = parser.parse_args(argv)
    if args.object_info:
        full = fetch_object_info(args.object_info)
        used = {SAGE, COMPARE} | {kind for kind, _ in MODEL_FOLDERS if kind in full}
        for spec in WORKFLOWS:
            workflow = load_template(spec.template)
            for rewrite in HOST_COMPAT:
                rewrite(workflow, Ids(workflow), full)
            used |= node_types(workflow)
        object_info = trim_object_info(full, used)
        if not args.check:
            OBJECT_INFO.write_text(dump(object_info))
    else:
        object_info = json.loads(OBJECT_INFO.read_text())
    files = render(object_info)
    stale = [p for p, text in files.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
    if args.check:
        for path in stale:
            print(f"differs from the generator's output: {path.relative_to(REPO)}")
        return 1 if stale else 0
    API_OUT.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} files ({len(stale)} changed) from {TEMPLATES_PACKAGE} {TEMPLATES_VERSION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
