"""Headless server: start the host's main.py with this repository as a custom node, POST an
API-format graph that uses the Sage Attention node to /prompt, poll /history, stop the server.

Nothing is written into the repository: the host gets a temporary --base-directory whose
custom_nodes/ links to this repo, plus a test-only helper pack (random conditioning, a stats
readout, bfloat16 on the CPU) and a tiny Wan 2.1 model under models/diffusion_models/.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest

import tiny_models as tm

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HELPER_PACK = textwrap.dedent('''
    import torch
    import comfy.model_management as mm

    # Test only: let the CPU run the diffusion model in bfloat16, as a GPU does (see tests/comfy/conftest.py).
    mm.should_use_bf16 = lambda *a, **kw: True


    class TestRandomConditioning:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"tokens": ("INT", {"default": 12}), "dim": ("INT", {"default": 4096}),
                                 "seed": ("INT", {"default": 0})}}
        RETURN_TYPES = ("CONDITIONING",)
        FUNCTION = "make"
        CATEGORY = "testing"

        def make(self, tokens, dim, seed):
            g = torch.Generator().manual_seed(seed)
            return ([[torch.randn(1, tokens, dim, generator=g), {}]],)


    class TestSageStats:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"model": ("MODEL",), "samples": ("LATENT",)}}
        RETURN_TYPES = ()
        FUNCTION = "report"
        OUTPUT_NODE = True
        CATEGORY = "testing"

        def report(self, model, samples):
            from comfy_sage.comfy import find
            fn = find(model.model_options.get("transformer_options", {}))
            stats = fn.stats.snapshot()["total"] if fn is not None else None
            return {"ui": {"stats": [stats], "finite": [bool(torch.isfinite(samples["samples"]).all())]}}


    NODE_CLASS_MAPPINGS = {"TestRandomConditioning": TestRandomConditioning, "TestSageStats": TestSageStats}
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port, path, payload=None, timeout=10):
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def graph(unet_name):
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet_name, "weight_dtype": "default"}},
        "2": {"class_type": "SageAttention", "inputs": {
            "model": ["1", 0], "backend": "auto", "variant": "auto", "qk_granularity": "auto", "smooth_k": True,
            "smooth_q": False, "start_percent": 0.0, "end_percent": 1.0, "full_precision_first_blocks": 0,
            "full_precision_last_blocks": 0, "allow_compile": True, "nan_guard": False}},
        "3": {"class_type": "TestRandomConditioning", "inputs": {"tokens": 12, "dim": 4096, "seed": 1}},
        "4": {"class_type": "TestRandomConditioning", "inputs": {"tokens": 12, "dim": 4096, "seed": 2}},
        "5": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 64, "length": 5,
                                                                   "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0], "seed": 0,
            "steps": 2, "cfg": 2.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "7": {"class_type": "TestSageStats", "inputs": {"model": ["2", 0], "samples": ["6", 0]}},
    }


@pytest.fixture(scope="module")
def server(comfyui_path, host, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("server")  # one server for the module's tests: each start takes seconds
    base = tmp_path / "base"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / "comfy-sage").symlink_to(REPO, target_is_directory=True)
    helper = base / "custom_nodes" / "sage_test_helpers"
    helper.mkdir()
    (helper / "__init__.py").write_text(HELPER_PACK)
    models = base / "models" / "diffusion_models"
    models.mkdir(parents=True)
    path = tm.write(host, tm.SPECS["wan21_t2v"], models)
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
         str(base), "--bf16-unet", "--disable-auto-launch", "--database-url", "sqlite:///:memory:"],
        cwd=comfyui_path, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{(tmp_path / 'server.log').read_text()[-4000:]}")
            try:
                http(port, "/system_stats", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail("server did not answer within 120 s")
                time.sleep(0.5)
        yield port, path.name, tmp_path / "server.log"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def wait_for(port, prompt_id, log_path):
    deadline = time.monotonic() + 180
    while True:
        history = http(port, f"/history/{prompt_id}")
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
            return history[prompt_id]
        if time.monotonic() > deadline:
            pytest.fail(f"prompt did not finish within 180 s:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.5)


def post(port, prompt):
    """POST /prompt; the host answers 400 with node_errors for a graph that fails validation."""
    try:
        return http(port, "/prompt", {"prompt": prompt, "client_id": "comfy-sage-test"})
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def test_server_runs_a_graph_with_the_node(server):
    port, unet_name, log_path = server
    info = http(port, "/object_info/SageAttention")
    assert info["SageAttention"]["display_name"] == "Sage Attention"

    # backend=reference: every call of the (bfloat16, CPU) model runs the quantization emulation.
    prompt = graph(unet_name)
    prompt["2"]["inputs"]["backend"] = "reference"
    answer = post(port, prompt)
    assert not answer.get("node_errors"), answer
    entry = wait_for(port, answer["prompt_id"], log_path)
    assert entry["status"]["status_str"] == "success", (entry["status"], log_path.read_text()[-4000:])
    ui = entry["outputs"]["7"]
    stats = ui["stats"][0]
    assert ui["finite"] == [True]
    assert stats["calls"] > 0 and stats["ours"] == stats["calls"], stats
    assert stats["backends"] == {"reference": stats["calls"]}

    # backend=auto on a CPU host means ComfyUI's attention: every call falls back, for one reason.
    answer = post(port, graph(unet_name))
    entry = wait_for(port, answer["prompt_id"], log_path)
    assert entry["status"]["status_str"] == "success", entry["status"]
    stats = entry["outputs"]["7"]["stats"][0]
    assert stats["ours"] == 0 and list(stats["fallback"]) == [
        "on cpu tensors (auto quantizes only on GPUs where a kernel was measured faster)"], stats
    text = log_path.read_text()
    assert text.count("comfy_sage: ComfyUI's attention for calls on cpu tensors") <= 1


@pytest.mark.parametrize("name,value,error", [
    ("variant", "int4qk-fp8pv", "value_not_in_list"),  # a variant the node deliberately does not offer
    ("backend", "bogus", "value_not_in_list"),
    ("full_precision_first_blocks", 300, "value_bigger_than_max"),
    ("start_percent", -0.1, "value_smaller_than_min"),
    ("end_percent", 1.5, "value_bigger_than_max"),
])
def test_server_rejects_out_of_range_inputs_at_validation(server, name, value, error):
    port, unet_name, _ = server
    prompt = graph(unet_name)
    prompt["2"]["inputs"][name] = value
    answer = post(port, prompt)
    errors = answer["node_errors"]["2"]["errors"]
    assert [(e["type"], e["extra_info"]["input_name"]) for e in errors] == [(error, name)], errors


def test_server_reports_start_after_end_once(server):
    port, unet_name, log_path = server
    prompt = graph(unet_name)
    prompt["2"]["inputs"].update(start_percent=0.8, end_percent=0.2)
    answer = post(port, prompt)
    assert not answer.get("node_errors"), answer  # both values are in range; the pair is checked on execution
    entry = wait_for(port, answer["prompt_id"], log_path)
    assert entry["status"]["status_str"] == "error"
    errors = [m for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert len(errors) == 1 and errors[0][1]["node_id"] == "2", errors
    assert "start_percent (0.8) must not exceed end_percent (0.2)" in errors[0][1]["exception_message"]
    # and the server keeps serving
    assert http(port, "/system_stats")["system"]
