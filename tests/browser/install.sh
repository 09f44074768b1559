#!/bin/sh
# What the real-browser test (tests/comfy/test_browser.py) needs on Debian 12 (bookworm):
# Debian's chromium and its chromedriver, and selenium. Run as root (CI) or with sudo.
set -eu
apt-get update
apt-get install -y --no-install-recommends chromium chromium-driver
python -m pip install "selenium>=4.20"
chromium --version
chromedriver --version
