"""The web extension in a real browser: a headless Chromium (Debian's, driven by selenium
through the system chromedriver) opens the ComfyUI frontend (the ``comfyui-frontend-package``
wheel) served by a real ComfyUI with this pack, loads a graph with Sage Attention, Sage Compare
Sampler and Sage Benchmark, queues it, and checks that the report table, the benchmark chart and
the Sage Attention node's status render inside the nodes.

The screenshot goes to ``COMFY_SAGE_ARTIFACTS`` when set (``tests/artifacts/`` holds the
committed one), else to the test's temporary folder. Install: ``tests/browser/install.sh``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from test_server import http, server  # noqa: F401  (the headless-server fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401

    SELENIUM = ""
except ImportError:
    SELENIUM = "selenium is not installed (pip install selenium)"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) or bool(SELENIUM),
    reason=SELENIUM or "no chromium/chromedriver on PATH (tests/browser/install.sh installs Debian's)",
)

TIMEOUT_S = 150
LAYOUT = {"1": [20, 40], "3": [20, 200], "4": [20, 360], "5": [20, 520], "2": [290, 40], "7": [290, 470],
          "6": [1000, 40], "8": [1000, 560]}


def graph(unet_name):
    node = dict(backend="reference", variant="auto", qk_granularity="auto", smooth_k=True, smooth_q=False,
                start_percent=0.0, end_percent=1.0, full_precision_first_blocks=0, full_precision_last_blocks=0,
                allow_compile=True, nan_guard=False)
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet_name, "weight_dtype": "default"}},
        "2": {"class_type": "SageAttention", "inputs": {"model": ["1", 0], **node}},
        "3": {"class_type": "TestRandomConditioning", "inputs": {"tokens": 12, "dim": 4096, "seed": 1}},
        "4": {"class_type": "TestRandomConditioning", "inputs": {"tokens": 12, "dim": 4096, "seed": 2}},
        "5": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 64, "length": 5,
                                                                   "batch_size": 1}},
        "6": {"class_type": "SageCompareSampler", "inputs": {
            "model": ["2", 0], "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0], "seed": 0,
            "steps": 2, "cfg": 2.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0,
            "warmup": False}},
        "7": {"class_type": "SageBenchmark", "inputs": {
            "model": ["2", 0], "shapes_from": "one sampling step", "max_shapes": 2, "rep_ms": 10.0,
            "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["6", 2]}},
    }


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1680,1050",
                "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script, what, timeout=TIMEOUT_S, log_path=None):
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log_path.read_text()[-3000:] if log_path else ""
            console = driver.get_log("browser") if hasattr(driver, "get_log") else []
            pytest.fail(f"timed out waiting for {what}\nbrowser console: {console[-10:]}\nserver log:\n{tail}")
        time.sleep(0.5)


def test_the_extension_renders_reports_chart_and_status(server, browser, tmp_path):  # noqa: F811
    port, unet_name, log_path = server
    # a fresh user: skip the first-run template browser, which would cover the canvas
    http(port, "/settings/Comfy.TutorialCompleted", True)
    browser.get(f"http://127.0.0.1:{port}/")
    wait_for(browser, "return !!(window.app && window.app.graph && window.app.canvas)", "the frontend")
    wait_for(browser, "return !!document.querySelector('.comfy-sage-status') || "
                      "(window.app.graph._nodes || []).length > 0", "the default graph")

    prompt = graph(unet_name)
    browser.execute_async_script(
        "const [prompt, done] = arguments;"
        "Promise.resolve(window.app.loadApiJson(prompt, 'sage-browser-test')).then(() => done(true), (e) => done(String(e)));",
        prompt)
    status = wait_for(browser, "const s = document.querySelector('.comfy-sage-status'); return s && s.textContent",
                      "the Sage Attention node's status before the run")
    assert "reference" in status and "Not run yet" in status, status

    browser.execute_async_script("const done = arguments[0]; Promise.resolve(window.app.queuePrompt(0, 1)).then(() => done(true), (e) => done(String(e)));")
    report = wait_for(browser, "const t = document.querySelector('.comfy-sage-report table'); return t && t.innerText",
                      "the compare report", log_path=log_path)
    assert "ComfyUI attention (baseline)" in report and "sage #1: reference/auto" in report, report
    assert "/" in report and "x" in report
    bench = wait_for(browser, "const b = document.querySelector('.comfy-sage-benchmark'); return b && b.innerText",
                     "the benchmark table", log_path=log_path)
    assert "sdpa.default" in bench and "Recommended:" in bench and "CPU" in bench, bench
    chart = wait_for(browser, "const i = document.querySelector('.comfy-sage-benchmark img.comfy-sage-chart');"
                              "return i && i.complete && i.naturalWidth > 0 && [i.naturalWidth, i.naturalHeight]",
                     "the benchmark chart image")
    assert chart[0] == 760, chart
    status = wait_for(browser, "const s = document.querySelector('.comfy-sage-status');"
                               "return s && s.textContent.includes('Last run') && s.textContent",
                      "the Sage Attention node's status after the run")
    assert "attention calls quantized (reference" in status, status

    # the plain-text fallback for frontends without DOM widgets: a bare LiteGraph-like node
    fallback = browser.execute_async_script("""
        const done = arguments[0];
        import('/extensions/comfy-sage/js/sage_report.js').then((m) => {
          const node = {size: [200, 100], widgets: [], setSize(s) { this.size = s; }};
          const shown = m.showPanel(node, 'sage_report', document.createElement('div'), 10);
          m.showText(node, 'line one\\nline two');
          const drawn = [];
          const ctx = {save() {}, restore() {}, fillText(t) { drawn.push(t); }};
          node.onDrawForeground(ctx);
          done([shown, drawn]);
        }, (e) => done(String(e)));""")
    assert fallback == [False, ["line one", "line two"]], fallback

    # lay the graph out so that every panel is visible in the screenshot
    browser.execute_script(
        "const pos = arguments[0]; for (const n of window.app.graph._nodes) if (pos[n.id]) n.pos = pos[n.id];"
        "const c = window.app.canvas; c.ds.scale = 0.6; c.ds.offset = [140, 150]; c.setDirty(true, true);", LAYOUT)
    time.sleep(1.0)
    out = Path(os.environ.get("COMFY_SAGE_ARTIFACTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    shot = out / "sage_nodes_browser.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
