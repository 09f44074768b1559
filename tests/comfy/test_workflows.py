"""The example workflows (workflows/) against a real ComfyUI with this pack loaded.

A headless server gets a temporary --base-directory: custom_nodes/ links to this repository
(plus a test-only helper pack), models/ holds an empty file for every model file the workflows
name (so the loaders' file lists accept them; the folder each goes in is the one the workflows'
notes give) and tiny random-weight models, input/ the images the workflows load.

* every workflow validates against the server's /object_info, converts to the committed API
  file, and passes the host's own prompt validation;
* the template browser lists them (/api/workflow_templates) and serves them;
* the Wan 2.1 text-to-video, Flux and compare workflows run end to end on the CPU: loaders pointed at the
  tiny models, each text encoder replaced by random conditioning of its shape, sizes and steps
  made tiny, everything else as committed. The videos and images they write are read back.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import zlib
from pathlib import Path

import pytest
import torch

import tiny_models as tm
from test_server import free_port, http, post, wait_for

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
NAMES = [p.stem for p in WORKFLOWS]
PACK = "comfy-sage"  # the custom_nodes folder name the host serves the workflows under

_spec = importlib.util.spec_from_file_location("make_workflows", REPO / "tools" / "make_workflows.py")
make_workflows = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_workflows)
from comfy_sage.comfy.compare import side_by_side  # noqa: E402
from comfy_sage.comfy.workflow_api import check, to_api  # noqa: E402

HELPER_PACK = textwrap.dedent('''
    import torch


    class TestRandomConditioning:
        """Stands in for a text encoder: random embeddings of the encoder's shape."""
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"tokens": ("INT", {"default": 12}), "dim": ("INT", {"default": 4096}),
                                 "pooled_dim": ("INT", {"default": 0}), "seed": ("INT", {"default": 0})}}
        RETURN_TYPES = ("CONDITIONING",)
        FUNCTION = "make"
        CATEGORY = "testing"

        def make(self, tokens, dim, pooled_dim, seed):
            g = torch.Generator().manual_seed(seed)
            extra = {"pooled_output": torch.randn(1, pooled_dim, generator=g)} if pooled_dim else {}
            return ([[torch.randn(1, tokens, dim, generator=g), extra]],)


    class TestSageStats:
        """Reports how many attention calls the Sage Attention node's override took."""
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"model": ("MODEL",), "after": ("LATENT",)}}
        RETURN_TYPES = ()
        FUNCTION = "report"
        OUTPUT_NODE = True
        CATEGORY = "testing"

        def report(self, model, after):
            from comfy_sage.comfy import find
            fn = find(model.model_options.get("transformer_options", {}))
            return {"ui": {"stats": [fn.stats.snapshot()["total"] if fn is not None else None]}}


    NODE_CLASS_MAPPINGS = {"TestRandomConditioning": TestRandomConditioning, "TestSageStats": TestSageStats}
''')

# Flux as ComfyUI detects it from a file: 24 heads of 128 (fixed), so full width, one block of each kind.
FLUX = tm.Spec("tiny_flux", "Flux", dict(
    image_model="flux", in_channels=16, out_channels=16, patch_size=2, vec_in_dim=768, context_in_dim=4096,
    hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56],
    theta=10000, qkv_bias=True, guidance_embed=True, txt_ids_dims=[]), detect=True, latent=(1, 16, 8, 8),
    context=(1, 8, 4096))


def _random_weights(model: torch.nn.Module, seed: int) -> dict:
    """Random bfloat16 weights for every parameter of a model built on the meta device: fan-in-scaled
    matrices, unit norms, small biases. One random block tiled over each tensor: Flux at full width
    is half a billion weights, and drawing each would dominate the test on a two-core CI."""
    block = torch.randn(1 << 20, generator=torch.Generator().manual_seed(seed))
    out = {}
    for name, t in model.state_dict().items():
        n = t.numel()
        if t.ndim == 1 and ("norm" in name or name.endswith(".scale") or name.endswith("gamma")):
            value = torch.ones(t.shape)
        else:
            fan_in = math.prod(t.shape[1:]) if t.ndim > 1 else 1
            scale = 0.02 if t.ndim == 1 else 1 / math.sqrt(max(fan_in, 1))
            start = (zlib.crc32(name.encode()) % block.numel()) if n < block.numel() else 0
            flat = block.roll(-start)[:n] if n <= block.numel() else block.repeat(n // block.numel() + 1)[:n]
            value = (flat * scale).reshape(t.shape)
        out[name] = value.to(tm.BF16).contiguous()
    return out


def write_flux(folder: Path) -> Path:
    import comfy.supported_models as sm
    from safetensors.torch import save_file

    config = getattr(sm, FLUX.supported)(dict(FLUX.unet_config))
    config.set_inference_dtype(tm.BF16, None)
    model = config.get_model({}, device=torch.device("meta"))
    path = folder / f"{FLUX.name}.safetensors"
    save_file(_random_weights(model.diffusion_model, 1), str(path))
    return path


def write_wan_vae(folder: Path) -> Path:
    """The Wan 2.1 VAE at width 8 (the host reads the width from the weights)."""
    import comfy.ldm.wan.vae as wan_vae
    from safetensors.torch import save_file

    with torch.device("meta"):
        vae = wan_vae.WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                             temperal_downsample=[False, True, True], image_channels=3, dropout=0.0)
    path = folder / "tiny_wan_vae.safetensors"
    save_file(_random_weights(vae, 2), str(path))
    return path


def write_flux_vae(folder: Path) -> Path:
    """Flux's 16-channel VAE (its widths are fixed in the host's detection)."""
    from comfy.ldm.models.autoencoder import AutoencodingEngine
    from safetensors.torch import save_file

    dd = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    with torch.device("meta"):
        ae = AutoencodingEngine(
            regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
            encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": dd},
            decoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Decoder", "params": dd})
    path = folder / "tiny_flux_ae.safetensors"
    save_file(_random_weights(ae, 3), str(path))
    return path


def referenced_files(workflow: dict) -> dict:
    """{folder: {file names}} of every loader widget in a UI workflow (MODEL_FOLDERS of the generator)."""
    from comfy_sage.comfy.workflow_api import widget_slots

    object_info = json.loads(make_workflows.OBJECT_INFO.read_text())
    out = {}
    nodes = list(workflow["nodes"]) + [n for sg in (workflow.get("definitions") or {}).get("subgraphs") or ()
                                       for n in sg["nodes"]]
    for node in nodes:
        for (kind, widget), folder in make_workflows.MODEL_FOLDERS.items():
            if node["type"] == kind:
                name = node["widgets_values"][widget_slots(object_info[kind]).index(widget)]
                out.setdefault(folder, set()).add(name)
        if node["type"] == "LoadImage":
            out.setdefault("<input>", set()).add(node["widgets_values"][0])
    return out


@pytest.fixture(scope="module")
def base(host, tmp_path_factory):
    """The server's base directory, and the names of the tiny models in it."""
    from PIL import Image

    base = tmp_path_factory.mktemp("workflows") / "base"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / PACK).symlink_to(REPO, target_is_directory=True)
    helper = base / "custom_nodes" / "sage_workflow_test_helpers"
    helper.mkdir()
    (helper / "__init__.py").write_text(HELPER_PACK)
    (base / "input").mkdir()
    for path in WORKFLOWS:
        for folder, names in referenced_files(json.loads(path.read_text())).items():
            target = base / "input" if folder == "<input>" else base / "models" / folder
            target.mkdir(parents=True, exist_ok=True)
            for name in names:
                if folder == "<input>":
                    Image.new("RGB", (64, 64), (90, 120, 200)).save(target / name)
                else:
                    (target / name).touch()  # only listed: the tests that run a workflow use tiny models
    models = base / "models"
    tiny = {
        "wan": tm.write(host, tm.SPECS["wan21_t2v"], models / "diffusion_models").name,
        "flux": write_flux(models / "diffusion_models").name,
        "wan_vae": write_wan_vae(models / "vae").name,
        "flux_vae": write_flux_vae(models / "vae").name,
    }
    yield base, tiny
    for folder, name in (("diffusion_models", tiny["flux"]), ("vae", tiny["flux_vae"])):
        (models / folder / name).unlink()  # 1.3 GB; pytest keeps the last three temporary folders


@pytest.fixture(scope="module")
def server(comfyui_path, base):
    base_dir, tiny = base
    port = free_port()
    log_path = base_dir.parent / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
         str(base_dir), "--disable-auto-launch", "--database-url", "sqlite:///:memory:"],
        cwd=comfyui_path, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                http(port, "/system_stats", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail("server did not answer within 180 s")
                time.sleep(0.5)
        yield port, base_dir, tiny, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def object_info(server):
    return http(server[0], "/object_info", timeout=60)


def test_node_definitions_snapshot_is_the_hosts(object_info):
    # tools/object_info.json (what the generator and the CPU tests convert with) must be this host's.
    snapshot = json.loads(make_workflows.OBJECT_INFO.read_text())
    assert make_workflows.trim_object_info(object_info, snapshot) == snapshot, (
        "the node definitions changed: with a ComfyUI running this pack, run "
        "python tools/make_workflows.py --object-info http://127.0.0.1:8188 and commit what it writes")


@pytest.mark.parametrize("name", NAMES)
def test_workflow_validates_on_the_host(name, object_info, server):
    workflow = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    assert check(workflow, object_info) == []
    prompt = to_api(workflow, object_info)
    assert prompt == json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())

    # The host's own validation: POST /prompt answers 400 with the errors of an invalid prompt. A
    # valid one is queued and fails at once (the model files here are empty); the history is not read.
    answer = post(server[0], prompt)
    assert answer.get("prompt_id") and not answer.get("node_errors") and not answer.get("error"), answer


def test_template_browser_lists_and_serves_the_workflows(server):
    port = server[0]
    listed = http(port, "/api/workflow_templates")
    assert sorted(listed.get(PACK, [])) == sorted(NAMES), listed
    for name in NAMES:
        served = http(port, f"/api/workflow_templates/{PACK}/{name}.json")
        assert served == json.loads((REPO / "workflows" / f"{name}.json").read_text())


# -- end to end -------------------------------------------------------------------------------------------


def run_prompt(port, prompt, log_path):
    answer = post(port, prompt)
    assert answer.get("prompt_id") and not answer.get("node_errors"), answer
    entry = wait_for(port, answer["prompt_id"], log_path)
    assert entry["status"]["status_str"] == "success", (entry["status"], log_path.read_text()[-4000:])
    return entry["outputs"]


def ids_of(prompt, *class_types):
    return [k for k, v in prompt.items() if v["class_type"] in class_types]


def make_tiny(prompt, *, unet, vae, tokens, dim, pooled_dim=0, size=(64, 64), length=None, steps=2):
    """The committed prompt with the loaders on tiny files, text encoders replaced by random
    conditioning, tiny sizes and steps; every other node and value as committed. Each rewrite
    asserts it found what it expects, so a regenerated workflow that changes shape fails here."""
    prompt = json.loads(json.dumps(prompt))
    (loader,) = ids_of(prompt, "UNETLoader")
    prompt[loader]["inputs"]["unet_name"] = unet
    (vae_loader,) = ids_of(prompt, "VAELoader")
    prompt[vae_loader]["inputs"]["vae_name"] = vae
    encoders = ids_of(prompt, "CLIPTextEncode")
    assert encoders
    for i, node_id in enumerate(encoders):
        prompt[node_id] = {"class_type": "TestRandomConditioning", "inputs": {
            "tokens": tokens, "dim": dim, "pooled_dim": pooled_dim, "seed": i}}
    for node_id in ids_of(prompt, "CLIPLoader", "DualCLIPLoader"):
        del prompt[node_id]
    assert not [v for v in prompt.values() for x in v["inputs"].values()
                if isinstance(x, list) and x[0] not in prompt], "a node still reads from a removed text-encoder loader"
    (latent,) = ids_of(prompt, "EmptyHunyuanLatentVideo", "EmptySD3LatentImage")
    prompt[latent]["inputs"].update(width=size[0], height=size[1])
    if length is not None:
        prompt[latent]["inputs"]["length"] = length
    (sampler,) = ids_of(prompt, "KSampler", "SageCompareSampler")
    prompt[sampler]["inputs"]["steps"] = steps
    (sage,) = ids_of(prompt, "SageAttention")
    prompt["sage-stats"] = {"class_type": "TestSageStats", "inputs": {"model": [sage, 0], "after": [sampler, 0]}}
    return prompt


def output_files(base_dir, outputs, node_id):
    files = outputs[node_id]["images"]
    assert files, outputs[node_id]
    return [base_dir / "output" / f["subfolder"] / f["filename"] for f in files]


def assert_sage_saw_attention(outputs):
    # The committed backend is "auto": on a CPU it leaves every call to the host (dispatch policy,
    # tested elsewhere). What the workflow must guarantee is that the sampler's model carries the
    # override and that every attention call of the diffusion model went through it.
    stats = outputs["sage-stats"]["stats"][0]
    assert stats is not None, "the sampler's model has no Sage Attention override"
    assert stats["calls"] > 0, json.dumps(stats)
    assert stats["ours"] + sum(stats["fallback"].values()) == stats["calls"], json.dumps(stats)


def test_wan21_t2v_workflow_runs(server):
    import imageio.v3 as iio

    port, base_dir, tiny, log_path = server
    committed = json.loads((REPO / "workflows" / "api" / "wan2.1_t2v_1.3B.json").read_text())
    prompt = make_tiny(committed, unet=tiny["wan"], vae=tiny["wan_vae"], tokens=12, dim=4096, length=5)
    outputs = run_prompt(port, prompt, log_path)
    assert_sage_saw_attention(outputs)
    (save,) = ids_of(prompt, "SaveVideo")
    (path,) = output_files(base_dir, outputs, save)
    frames = iio.imread(path, plugin="pyav")
    assert frames.shape == (5, 64, 64, 3), frames.shape  # 2 latent frames -> 1 + 4
    assert frames.std() > 0


def test_flux_dev_t2i_workflow_runs(server):
    from PIL import Image

    port, base_dir, tiny, log_path = server
    committed = json.loads((REPO / "workflows" / "api" / "flux_dev_t2i.json").read_text())
    prompt = make_tiny(committed, unet=tiny["flux"], vae=tiny["flux_vae"], tokens=8, dim=4096, pooled_dim=768)
    outputs = run_prompt(port, prompt, log_path)
    assert_sage_saw_attention(outputs)
    (save,) = ids_of(prompt, "SaveImage")
    (path,) = output_files(base_dir, outputs, save)
    with Image.open(path) as image:
        image.load()
        assert image.size == (64, 64)
        low, high = image.getextrema()[0]
        assert low < high, "a flat image"


def test_compare_workflow_runs(server):
    import imageio.v3 as iio

    port, base_dir, tiny, log_path = server
    committed = json.loads((REPO / "workflows" / "api" / "compare_wan2.1_t2v_1.3B.json").read_text())
    prompt = make_tiny(committed, unet=tiny["wan"], vae=tiny["wan_vae"], tokens=12, dim=4096, length=5)
    outputs = run_prompt(port, prompt, log_path)
    assert_sage_saw_attention(outputs)
    (compare,) = ids_of(prompt, "SageCompareSampler")
    report = outputs[compare]["text"][0]
    assert "baseline" in report.lower(), report
    (save,) = ids_of(prompt, "SaveVideo")
    (path,) = output_files(base_dir, outputs, save)
    frames = iio.imread(path, plugin="pyav")
    # ComfyUI's attention left, Sage right, a white gap between (compare.side_by_side's default)
    gap = inspect.signature(side_by_side).parameters["gap"].default
    assert frames.shape == (5, 64, 2 * 64 + gap, 3), frames.shape


# -- the real frontend ----------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
BROWSER_SKIP = ("selenium is not installed" if importlib.util.find_spec("selenium") is None else
                "" if CHROMIUM and CHROMEDRIVER else "no chromium/chromedriver on PATH (tests/browser/install.sh)")
VIRTUAL = ["Note", "MarkdownNote", "Reroute", "PrimitiveNode"]


@pytest.mark.skipif(bool(BROWSER_SKIP), reason=BROWSER_SKIP or "-")
def test_workflows_open_in_the_frontend_from_the_template_browser(server, tmp_path):
    """Each workflow, fetched from the template-browser URL and loaded by the real frontend
    (comfyui-frontend-package, headless Chromium): every node type registered (no missing
    nodes), no error dialog, and the frontend's own prompt (graphToPrompt) equal to the committed
    API file, the one the host validated. Then the Wan 2.1 one queued from the page with tiny models. A screenshot of one and a log of all go to
    COMFY_SAGE_ARTIFACTS when set, else to the test's temporary folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    port = server[0]
    http(port, "/settings/Comfy.TutorialCompleted", True)  # no first-run template dialog over the canvas
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000",
                "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    out = Path(os.environ.get("COMFY_SAGE_ARTIFACTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    log = []
    try:
        driver.set_script_timeout(120)
        driver.get(f"http://127.0.0.1:{port}/")
        deadline = time.monotonic() + 150
        while not driver.execute_script("return !!(window.app && window.app.graph && window.app.canvas)"):
            assert time.monotonic() < deadline, "the frontend did not start"
            time.sleep(0.5)
        for name in NAMES:
            result = driver.execute_async_script("""
                const [pack, name, virtual, done] = arguments;
                (async () => {
                  const url = `/api/workflow_templates/${pack}/${name}.json`;
                  const workflow = await (await fetch(url)).json();
                  await window.app.loadGraphData(workflow, true, true, name);
                  await new Promise((r) => setTimeout(r, 300));
                  const defs = (workflow.definitions && workflow.definitions.subgraphs) || [];
                  const sub = new Set(defs.map((d) => d.id));
                  const types = [...workflow.nodes, ...defs.flatMap((d) => d.nodes)].map((n) => n.type)
                    .filter((t) => !sub.has(t));
                  const registered = window.LiteGraph.registered_node_types;
                  const missing = [...new Set(types)].filter((t) => !registered[t]);
                  const dialogs = [...document.querySelectorAll('.p-dialog')].map((d) => d.innerText.slice(0, 400));
                  const prompt = (await window.app.graphToPrompt()).output;
                  done({missing, dialogs, prompt, nodes: window.app.graph._nodes.length});
                })().catch((e) => done({error: String(e && e.stack || e)}));
            """, PACK, name, VIRTUAL)
            committed = json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())
            frontend = result.get("prompt") or {}
            entry = {"workflow": name, **{k: v for k, v in result.items() if k != "prompt"},
                     "prompt_equals_committed_api": frontend == committed,
                     "differs": {k: [frontend.get(k), committed.get(k)] for k in sorted(set(frontend) | set(committed))
                                 if frontend.get(k) != committed.get(k)}}
            log.append(entry)
            if name == "wan2.1_t2v_1.3B":
                # the whole graph in view (the template's saved view crops the note), at a zoom where
                # the frontend still draws the text
                driver.set_window_size(2400, 1400)
                time.sleep(0.5)
                driver.execute_async_script(
                    "const done = arguments[0]; Promise.resolve(window.app.extensionManager.command"
                    ".execute('Comfy.Canvas.FitView')).then(() => done(true), (e) => done(String(e)));")
                time.sleep(1.0)
                driver.save_screenshot(str(out / "workflow_wan2.1_t2v_1.3B_browser.png"))
                driver.set_window_size(1600, 1000)
            driver.execute_script("document.querySelectorAll('.p-dialog-close-button').forEach((b) => b.click())")
        (out / "workflows_browser_log.json").write_text(json.dumps(log, indent=2) + "\n")
        deadline = time.monotonic() + 180
        while any(http(port, "/queue").values()):  # earlier tests' prompts: finished before counting
            assert time.monotonic() < deadline, "the queue did not empty"
            time.sleep(0.5)
        before = set(http(port, "/history"))
        queued = driver.execute_async_script(NEW_USER_JS, PACK, "wan2.1_t2v_1.3B", server[2]["wan"],
                                             server[2]["wan_vae"])
    finally:
        driver.quit()
    for entry in log:
        assert "error" not in entry, entry
        assert entry["missing"] == [] and entry["dialogs"] == [], entry
        assert entry["prompt_equals_committed_api"], entry

    # As a new user would: the Wan 2.1 workflow from the template browser, the tiny model files
    # picked in its loaders, the text encoders swapped for random conditioning, queued from the page.
    assert isinstance(queued, dict) and "error" not in queued and not queued.get("errors"), queued
    deadline = time.monotonic() + 180
    while not (new := set(http(port, "/history")) - before):
        assert time.monotonic() < deadline, f"nothing ran after queueing from the page: {queued}"
        time.sleep(0.5)
    entry = wait_for(port, new.pop(), server[3])
    assert entry["status"]["status_str"] == "success", (entry["status"], server[3].read_text()[-4000:])
    (video,) = [o for o in entry["outputs"].values() if o.get("animated")]
    import imageio.v3 as iio

    frames = iio.imread(server[1] / "output" / video["images"][0]["subfolder"] / video["images"][0]["filename"],
                        plugin="pyav")
    assert frames.shape == (5, 64, 64, 3), frames.shape


NEW_USER_JS = """
const [pack, name, unet, vae, done] = arguments;
(async () => {
  const workflow = await (await fetch(`/api/workflow_templates/${pack}/${name}.json`)).json();
  await window.app.loadGraphData(workflow, true, true, name);
  const graph = window.app.graph;
  const link = (id) => (graph.links.get ? graph.links.get(id) : graph.links[id]);
  const widget = (node, w) => node.widgets.find((x) => x.name === w);
  const set = (type, values) => graph._nodes.filter((n) => n.type === type).forEach((n) => {
    for (const [w, v] of Object.entries(values)) widget(n, w).value = v;
  });
  set("UNETLoader", {unet_name: unet});
  set("VAELoader", {vae_name: vae});
  set("EmptyHunyuanLatentVideo", {width: 64, height: 64, length: 5});
  set("KSampler", {steps: 2});
  let seed = 0;
  for (const encoder of graph._nodes.filter((n) => n.type === "CLIPTextEncode")) {
    const random = window.LiteGraph.createNode("TestRandomConditioning");
    random.pos = [...encoder.pos];
    graph.add(random);
    widget(random, "tokens").value = 12;
    widget(random, "dim").value = 4096;
    widget(random, "seed").value = seed++;
    for (const id of [...(encoder.outputs[0].links || [])]) {
      const l = link(id);
      random.connect(0, graph.getNodeById(l.target_id), l.target_slot);
    }
    graph.remove(encoder);
  }
  const answer = await window.app.queuePrompt(0, 1);
  done({answer: String(answer), errors: window.app.lastNodeErrors || null});
})().catch((e) => done({error: String(e && e.stack || e)}));
"""
