#!/usr/bin/env python3
"""Set-up: what ComfyUI-Manager runs after cloning, and the manual command.

    python install.py            # Python requirements, report, build the CUDA library for this GPU
    python install.py --arch 80,86,89,90,120   # build for other GPUs (no GPU needed)

Never replaces torch. A failed kernel build prints the compiler's own errors and leaves the
other backends (SDPA, reference) working; the exit code says it failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def install_requirements() -> int:
    path = os.path.join(HERE, "requirements.txt")
    with open(path) as f:
        wanted = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    if not wanted:
        print("requirements: nothing to install (torch comes from ComfyUI)")
        return 0
    print(f"requirements: installing {' '.join(wanted)}")
    return subprocess.call([sys.executable, "-m", "pip", "install", "-r", path])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", help="comma-separated compute capabilities, e.g. 80,86,89,90,120 "
                                       "(default: the GPUs present)")
    parser.add_argument("--no-requirements", action="store_true", help="skip pip")
    parser.add_argument("--no-build", action="store_true", help="skip compiling the CUDA library")
    parser.add_argument("--jobs", type=int, default=None, help="parallel compile jobs")
    args = parser.parse_args(argv)

    status = 0 if args.no_requirements else install_requirements()
    sys.path.insert(0, HERE)
    from comfy_sage import cli

    cli._print_info(cli.info())
    if args.no_build:
        return status
    if importlib.util.find_spec("comfy_sage.build") is None:
        print("build: this release has no native library to build")
        return status
    from comfy_sage import build

    build_args = []
    if args.arch:
        build_args += ["--arch", args.arch]
    if args.jobs:
        build_args += ["--jobs", str(args.jobs)]
    built = build.main(build_args)
    if built != 0:
        print("build: FAILED (see the compiler output above); the sdpa and reference backends still work",
              file=sys.stderr)
    return status or built


if __name__ == "__main__":
    os.chdir(HERE)
    sys.exit(main())
