"""The main command on a CPU-only machine: info, and bench's accuracy table and JSON."""

import json
import os
import subprocess
import sys

import pytest
import torch

from comfy_sage import bench, cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    return subprocess.run([sys.executable, "-m", "comfy_sage", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_info_lists_every_backend():
    res = run("info")
    assert res.returncode == 0, res.stderr
    for name in ("cuda", "triton", "reference", "sdpa"):
        assert name in res.stdout
    data = json.loads(run("info", "--json").stdout)
    assert data["torch"] == torch.__version__ and set(data["backends"]) == {"cuda", "triton", "reference", "sdpa"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_bench_on_cpu_prints_accuracy_and_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    res = run("bench", "--only-shapes", "--shape", "1,2,256,64", "--shape", "1,1,100,128,causal",
              "--json", str(path))
    assert res.returncode == 0, res.stderr
    assert "timing needs an NVIDIA GPU" in res.stdout
    data = json.loads(path.read_text())
    rows = data["rows"]
    assert {r["shape"] for r in rows} == {"custom-1x2x256x64", "custom-1x1x100x128-causal"}
    fp8 = next(r for r in rows if r["variant"] == "reference.int8qk-fp8pv" and r["dims"] == "1x2x256x64")
    assert 0.99 < fp8["cos"] < 1.0 and 0.0 < fp8["rel_l1"] < 0.05 and fp8["ms"] is None
    assert data["environment"]["torch"] == torch.__version__ and data["environment"]["gpu"] is None


def test_bench_rejects_bad_shapes():
    res = run("bench", "--shape", "1,2,x,64")
    assert res.returncode == 2 and "--shape: expected B,H,N,D[,causal]" in res.stderr
    with pytest.raises(ValueError, match="fifth field"):
        bench.parse_shape("1,2,3,4,maybe")


def test_model_shapes_are_sorted_by_work():
    flops = [s.flops for s in bench.MODEL_SHAPES]
    assert flops == sorted(flops)
    wan = next(s for s in bench.MODEL_SHAPES if s.name == "wan14b-480p")
    assert (wan.batch, wan.heads, wan.tokens, wan.head_dim) == (1, 40, 32760, 128)


def test_cli_main_in_process(capsys):
    assert cli.main(["info"]) == 0
    assert "backends:" in capsys.readouterr().out


def test_bench_rejects_a_glob_that_matches_nothing():
    res = run("bench", "--variants", "nomatch*")
    assert res.returncode == 2 and "--variants: 'nomatch*' matches no variant runnable here; runnable: " in res.stderr


def test_bench_rejects_an_unwritable_json_path_before_running(tmp_path):
    path = tmp_path / "missing-folder" / "out.json"
    res = run("bench", "--json", str(path))
    assert res.returncode == 2 and f"--json: cannot write {str(path)!r}" in res.stderr
    assert "variant" not in res.stdout  # no table: nothing ran


def test_bench_defaults_to_what_the_node_offers():
    from comfy_sage.comfy import NODE_VARIANTS

    assert bench.node_variant("sdpa.math") and bench.node_variant("reference.int8qk-fp8pv")
    assert not bench.node_variant("reference.int4qk-fp8pv") and "int4qk-fp8pv" not in NODE_VARIANTS


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_bench_caps_the_math_kernel_on_the_cpu_too():
    rows = bench.run([bench.Shape("s", 1, 1, 300, 64)], torch.device("cpu"), select=lambda n: n == "sdpa.math",
                     slow_max_tokens=256, progress=False)
    assert rows[0]["skipped"].startswith("skipped above 256 tokens")
