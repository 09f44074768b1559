"""The example workflows without ComfyUI: the UI→API converter (comfy_sage/comfy/workflow_api.py)
on small graphs with the front end's rules, and the committed workflows against the node
definitions they were generated with (tools/object_info.json; tests/comfy/test_workflows.py
checks that file against a real host and runs three workflows)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import pytest

from comfy_sage.comfy.workflow_api import WorkflowError, check, to_api, widget_slots

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
NAMES = [p.stem for p in WORKFLOWS]

_spec = importlib.util.spec_from_file_location("make_workflows", REPO / "tools" / "make_workflows.py")
make_workflows = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_workflows)
OBJECT_INFO = json.loads(make_workflows.OBJECT_INFO.read_text())


def load(name, api=False):
    return json.loads((REPO / "workflows" / ("api" if api else "") / f"{name}.json").read_text())


# -- the committed workflows -----------------------------------------------------------------------------


def test_every_listed_workflow_is_committed():
    assert sorted(NAMES) == sorted(s.name for s in make_workflows.WORKFLOWS)
    assert sorted(p.stem for p in (REPO / "workflows" / "api").glob("*.json")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_api_file_is_the_converters_output(name):
    assert to_api(load(name), OBJECT_INFO) == load(name, api=True)


@pytest.mark.parametrize("name", NAMES)
def test_workflow_checks_clean_against_its_node_definitions(name):
    # Combos are the host's file lists (empty in the snapshot); tests/comfy checks them with files present.
    assert check(load(name), OBJECT_INFO, check_combos=False) == []


LOADERS = {"UNETLoader", "CheckpointLoaderSimple"}
PASS_THROUGH = {"LoraLoaderModelOnly": ("model",), "LoraLoader": ("model",), "ComfySwitchNode": ("on_false", "on_true")}


@pytest.mark.parametrize("name", NAMES)
def test_every_model_the_graph_uses_passes_through_a_sage_node(name):
    prompt = load(name, api=True)

    def reaches_loader_unpatched(node_id, seen=()):
        node = prompt[node_id]
        if node["class_type"] == "SageAttention":
            return False
        if node["class_type"] in LOADERS:
            return True
        inputs = PASS_THROUGH.get(node["class_type"], ("model",))
        return any(reaches_loader_unpatched(node["inputs"][i][0], seen + (node_id,))
                   for i in inputs if isinstance(node["inputs"].get(i), list) and node_id not in seen)

    sages = [k for k, v in prompt.items() if v["class_type"] == "SageAttention"]
    assert sages
    consumers = [k for k, v in prompt.items() if v["class_type"] not in LOADERS | set(PASS_THROUGH) | {"SageAttention"}
                 and isinstance(v["inputs"].get("model"), list)]
    assert consumers
    for node_id in consumers:
        assert not reaches_loader_unpatched(prompt[node_id]["inputs"]["model"][0]), (
            f"{name}: node {node_id} ({prompt[node_id]['class_type']}) gets a model that no Sage node patched")
    for sage in sages:
        assert any(v["inputs"].get(k) == [sage, 0] for v in prompt.values() for k in v["inputs"]), "unused Sage node"
    expected = 2 if name == "wan2.2_t2v_14B" else 1  # high- and low-noise models: one Sage node each
    assert len(sages) == expected


@pytest.mark.parametrize("name", NAMES)
def test_note_lists_every_model_file_and_its_folder(name):
    workflow = load(name)
    (note,) = [n for n in workflow["nodes"] if n.get("title") == "comfy-sage: model files"]
    text = note["widgets_values"][0]
    nodes = workflow["nodes"] + [n for sg in workflow.get("definitions", {}).get("subgraphs", []) for n in sg["nodes"]]
    listed = 0
    for node in nodes:
        for (kind, widget), folder in make_workflows.MODEL_FOLDERS.items():
            if node["type"] == kind and node.get("mode", 0) == 0:
                file = node["widgets_values"][widget_slots(OBJECT_INFO[kind]).index(widget)]
                assert f"| `{file}` | `ComfyUI/models/{folder}/` |" in text, (file, folder)
                listed += 1
    assert listed


def test_only_ui_workflows_sit_where_the_template_browser_looks():
    # ComfyUI lists <pack>/workflows/*.json (not subfolders) in its template browser: UI format only there.
    for path in WORKFLOWS:
        assert "nodes" in json.loads(path.read_text()), path
    for path in (REPO / "workflows" / "api").glob("*.json"):
        assert "nodes" not in json.loads(path.read_text()), path


def _templates_installed():
    try:
        return importlib.metadata.version(make_workflows.TEMPLATES_PACKAGE) == make_workflows.TEMPLATES_VERSION
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _templates_installed(), reason=f"needs {make_workflows.TEMPLATES_PACKAGE}=="
                                                       f"{make_workflows.TEMPLATES_VERSION} (the test extra)")
def test_committed_files_are_the_generators_output():
    files = make_workflows.render(OBJECT_INFO)
    assert sorted(files) == sorted([*WORKFLOWS, *(REPO / "workflows" / "api").glob("*.json")])
    for path, text in files.items():
        assert path.read_text(encoding="utf-8") == text, f"{path.relative_to(REPO)}: run tools/make_workflows.py"


# -- the converter on small graphs -----------------------------------------------------------------------

DEFS = {
    "Loader": {"input": {"required": {"name": [["a.bin", "b.bin"], {}]}}, "output": ["MODEL"]},
    "Patch": {"input": {"required": {"model": ["MODEL", {}], "strength": ["FLOAT", {"min": 0.0, "max": 2.0}]}},
              "output": ["MODEL"]},
    "Sampler": {"input": {"required": {"model": ["MODEL", {}], "seed": ["INT", {"control_after_generate": True}],
                                       "steps": ["INT", {"min": 1, "max": 100}], "mode": ["COMBO", {"options": ["x", "y"]}]},
                          "optional": {"noise_seed": ["INT", {}], "label": ["STRING", {}]}},
                "input_order": {"required": ["model", "seed", "steps", "mode"], "optional": ["noise_seed", "label"]},
                "output": ["LATENT"]},
    "Number": {"input": {"required": {"value": ["INT", {"forceInput": True}]}}, "output": ["INT"]},
}


def node(node_id, kind, widgets=(), inputs=(), outputs=(), mode=0, **extra):
    return {"id": node_id, "type": kind, "mode": mode, "widgets_values": list(widgets),
            "inputs": [dict(i) for i in inputs], "outputs": [dict(o) for o in outputs], **extra}


def chain_workflow(patch_mode=0):
    """Loader -> Patch -> Sampler, links 1 and 2."""
    return {"nodes": [
        node(1, "Loader", ["a.bin"], outputs=[{"name": "MODEL", "type": "MODEL", "links": [1]}]),
        node(2, "Patch", [1.5], inputs=[{"name": "model", "type": "MODEL", "link": 1}],
             outputs=[{"name": "MODEL", "type": "MODEL", "links": [2]}], mode=patch_mode),
        node(3, "Sampler", [7, "randomize", 20, "y", 5, "fixed", "hello"], inputs=[{"name": "model", "type": "MODEL", "link": 2}]),
        node(4, "MarkdownNote", ["notes are not sent"]),
    ], "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 2, 0, 3, 0, "MODEL"]]}


def test_widget_values_follow_the_definition_order_and_skip_control_values():
    # seed has control_after_generate (one extra value: "randomize"); noise_seed is an old-style
    # seed name without the flag, so the front end adds a control value after it too.
    assert widget_slots(DEFS["Sampler"]) == ["seed", None, "steps", "mode", "noise_seed", None, "label"]
    prompt = to_api(chain_workflow(), DEFS)
    assert prompt["3"]["inputs"] == {"model": ["2", 0], "seed": 7, "steps": 20, "mode": "y", "noise_seed": 5,
                                     "label": "hello"}
    assert prompt["2"]["inputs"] == {"model": ["1", 0], "strength": 1.5}
    assert set(prompt) == {"1", "2", "3"}  # the note stays in the editor


def test_a_bypassed_node_passes_its_input_through_and_a_muted_one_cuts_it():
    bypassed = to_api(chain_workflow(patch_mode=4), DEFS)
    assert "2" not in bypassed and bypassed["3"]["inputs"]["model"] == ["1", 0]
    muted = to_api(chain_workflow(patch_mode=2), DEFS)
    assert "2" not in muted and "model" not in muted["3"]["inputs"]


def test_reroutes_and_legacy_primitives_resolve_like_the_front_end():
    workflow = chain_workflow()
    # A reroute between Patch and Sampler; a PrimitiveNode driving Sampler.steps (its value is
    # already in the sampler's widgets_values, so the link is not sent).
    workflow["nodes"] += [node(5, "Reroute", inputs=[{"name": "", "type": "*", "link": 2}],
                               outputs=[{"name": "", "type": "MODEL", "links": [3]}]),
                          node(6, "PrimitiveNode", [33], outputs=[{"name": "INT", "type": "INT", "links": [4]}])]
    workflow["links"] = [[1, 1, 0, 2, 0, "MODEL"], [2, 2, 0, 5, 0, "MODEL"], [3, 5, 0, 3, 0, "MODEL"],
                         [4, 6, 0, 3, 1, "INT"]]
    sampler = workflow["nodes"][2]
    sampler["inputs"] = [{"name": "model", "type": "MODEL", "link": 3},
                         {"name": "steps", "type": "INT", "link": 4, "widget": {"name": "steps"}}]
    sampler["widgets_values"][2] = 33
    prompt = to_api(workflow, DEFS)
    assert prompt["3"]["inputs"]["model"] == ["2", 0]
    assert prompt["3"]["inputs"]["steps"] == 33
    assert set(prompt) == {"1", "2", "3"}


def subgraph_workflow(outer_links_steps):
    """Top: Loader(1) -> Sub(10) -> [Sampler inside]; the subgraph: inputs model, steps; output LATENT."""
    sub_id = "5f0c4b1e-0000-4000-8000-000000000001"
    inner = {
        "id": sub_id, "name": "Sub", "inputNode": {"id": -10}, "outputNode": {"id": -20},
        "inputs": [{"id": "i0", "name": "model", "type": "MODEL", "linkIds": [11]},
                   {"id": "i1", "name": "steps", "type": "INT", "linkIds": [12]}],
        "outputs": [{"id": "o0", "name": "LATENT", "type": "LATENT", "linkIds": [13]}],
        "nodes": [node(3, "Sampler", [1, "fixed", 8, "x", 0, "fixed", ""],
                       inputs=[{"name": "model", "type": "MODEL", "link": 11},
                               {"name": "steps", "type": "INT", "link": 12, "widget": {"name": "steps"}}],
                       outputs=[{"name": "LATENT", "type": "LATENT", "links": [13]}])],
        "links": [{"id": 11, "origin_id": -10, "origin_slot": 0, "target_id": 3, "target_slot": 0, "type": "MODEL"},
                  {"id": 12, "origin_id": -10, "origin_slot": 1, "target_id": 3, "target_slot": 1, "type": "INT"},
                  {"id": 13, "origin_id": 3, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "LATENT"}],
    }
    outer_inputs = [{"name": "model", "type": "MODEL", "link": 1}]
    nodes = [node(1, "Loader", ["b.bin"], outputs=[{"name": "MODEL", "type": "MODEL", "links": [1]}])]
    links = [[1, 1, 0, 10, 0, "MODEL"]]
    if outer_links_steps:
        outer_inputs.append({"name": "steps", "type": "INT", "link": 2, "widget": {"name": "steps"}})
        nodes.append(node(2, "Number", [], outputs=[{"name": "INT", "type": "INT", "links": [2]}],
                          inputs=[{"name": "value", "type": "INT", "link": None}]))
        links.append([2, 2, 0, 10, 1, "INT"])
    nodes.append(node(10, sub_id, [], inputs=outer_inputs, outputs=[{"name": "LATENT", "type": "LATENT", "links": [3]}]))
    nodes.append(node(11, "Sampler", [2, "fixed", 4, "x", 0, "fixed", ""],
                      inputs=[{"name": "model", "type": "MODEL", "link": None}]))
    return {"nodes": nodes, "links": links, "definitions": {"subgraphs": [inner]}}


def test_subgraphs_expand_with_prefixed_ids_and_take_their_inputs_from_outside():
    prompt = to_api(subgraph_workflow(outer_links_steps=False), DEFS)
    # The inner sampler: its model from the loader outside; steps unconnected outside, so its own widget value.
    assert prompt["10:3"]["inputs"]["model"] == ["1", 0]
    assert prompt["10:3"]["inputs"]["steps"] == 8
    assert "10" not in prompt
    linked = to_api(subgraph_workflow(outer_links_steps=True), DEFS)
    assert linked["10:3"]["inputs"]["steps"] == ["2", 0]


def test_a_link_out_of_a_subgraph_resolves_to_the_inner_node():
    workflow = subgraph_workflow(outer_links_steps=False)
    workflow["nodes"].append(node(12, "Patch", [1.0], inputs=[{"name": "model", "type": "MODEL", "link": 9}]))
    # Not type-correct (LATENT into MODEL): the converter does not judge, check() does.
    workflow["links"] += [[9, 10, 0, 12, 0, "LATENT"]]
    workflow["nodes"][1]["outputs"][0]["links"].append(9)
    assert to_api(workflow, DEFS)["12"]["inputs"]["model"] == ["10:3", 0]
    assert any("carries LATENT" in p for p in check(workflow, DEFS))


def test_conversion_errors_name_the_node():
    workflow = chain_workflow()
    workflow["nodes"][1]["type"] = "Missing"
    with pytest.raises(WorkflowError, match=r"node 2 \(Missing\): the host has no node of this type"):
        to_api(workflow, DEFS)
    workflow = chain_workflow()
    workflow["nodes"][2]["widgets_values"] = [7, "randomize"]
    with pytest.raises(WorkflowError, match=r"node 3 \(Sampler\): 2 widget values"):
        to_api(workflow, DEFS)


def test_check_finds_bad_values_and_links():
    workflow = chain_workflow()
    assert check(workflow, DEFS) == []
    workflow["nodes"][0]["widgets_values"] = ["c.bin"]
    workflow["nodes"][1]["widgets_values"] = [3.0]
    workflow["nodes"][2]["widgets_values"][2] = 0
    problems = check(workflow, DEFS)
    assert any("name='c.bin' is not one of its 2 options" in p for p in problems)
    assert any("strength=3.0 is outside [0.0, 2.0]" in p for p in problems)
    assert any("steps=0 is outside [1, 100]" in p for p in problems)
    assert check(workflow, DEFS, check_combos=False) and not any("c.bin" in p for p in check(workflow, DEFS, False))
    workflow = chain_workflow()
    workflow["links"].append([7, 1, 0, 3, 0, "MODEL"])  # a second link into the same slot
    problems = check(workflow, DEFS)
    assert any("link 7 enters slot 0 of node 3, which does not record it" in p for p in problems)
