#!/usr/bin/env python3
"""Set-up: what ComfyUI-Manager runs after cloning, and the manual command.

    python install.py [--arch 80,86,89,90,120] [--check] [--force] [--no-download] [--jobs N]
                      [--no-self-test]

Run it with ComfyUI's own Python. It never installs or replaces torch. It installs this
pack's requirements, builds the CUDA kernels for the GPUs present (or --arch) into a cache
(a second run is a cache hit; --force rebuilds; a damaged cached library is rebuilt by
itself), fetching NVIDIA's nvcc wheel when there is no CUDA toolkit, self-tests the build on
the GPU, and prints an environment report. It asks nothing: ComfyUI-Manager gives it no
terminal.

Exit codes (0 whenever the pack is usable as installed):
  0  ready: kernels built or cached and self-tested, or no NVIDIA GPU here (the node then
     uses ComfyUI's attention; nothing is compiled)
  1  an unexpected error in install.py itself (its traceback is printed: please report it)
  2  bad command line
  3  torch is missing or broken in this Python (run install.py with ComfyUI's Python)
  4  pip failed (the pack's requirements or NVIDIA's compiler wheels)
  5  no CUDA compiler: nvcc not found and not fetched (--no-download, or no wheel for this CUDA)
  6  no host C++ compiler for nvcc (g++ on Linux, MSVC cl.exe on Windows)
  7  the kernels did not compile or link (the compiler's lines are printed)
  8  the self-test failed: the built library does not load or a kernel disagrees with the reference
  9  --check only: the library for these GPUs is not built, or its cached file is damaged
In every case but 3 the pack still imports and ComfyUI's attention keeps working.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
READY, USAGE, NO_TORCH, PIP_FAILED, NO_NVCC, NO_HOST_COMPILER, BUILD_FAILED, SELFTEST_FAILED, NOT_BUILT = (
    0, 2, 3, 4, 5, 6, 7, 8, 9)
ISSUES = "https://github.com/comfy-sage/comfy-sage/issues"
# A toolkit header not found, as g++ and as nvcc's own front end say it.
CUDA_HEADER_MISSING = (r'(cuda[\w/]*\.h|crt/[\w.]+|cuda/std/\w+|nv\w+\.h)\W.*No such file'
                       r'|cannot open source file "(cuda[\w/]*\.h|crt/|cuda/std/|nv\w+\.h)')


def say(line: str = "") -> None:
    print(line, flush=True)


class Outcome:
    """What the run ends with: an exit code, and the lines that explain it (printed last)."""

    def __init__(self, code: int, *lines: str):
        self.code, self.lines = code, list(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__[__doc__.index("Exit codes"):])
    parser.add_argument("--arch", help="comma-separated compute capabilities to build for, e.g. 80,86,89,90,120 "
                                       "(default: the GPUs present)")
    parser.add_argument("--check", action="store_true",
                        help="install and build nothing: report, check the cached library, self-test it")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache has the library")
    parser.add_argument("--no-download", action="store_true",
                        help="install nothing with pip; print what would be installed instead")
    parser.add_argument("--jobs", type=int, default=0, help="parallel nvcc processes (default: CPU count)")
    parser.add_argument("--no-self-test", action="store_true", help="skip the GPU self-test after the build")
    return parser.parse_args(argv)


def import_torch():
    """torch, or an Outcome saying why this Python cannot run the pack."""
    try:
        import torch
    except ImportError:
        return Outcome(NO_TORCH, f"torch is not installed in this Python ({sys.executable}).",
                       "comfy-sage runs on ComfyUI's own torch: run install.py with the Python that runs ComfyUI",
                       "(the portable Windows build, from its folder: "
                       "python_embeded\\python.exe ComfyUI\\custom_nodes\\comfy-sage\\install.py),",
                       "or install ComfyUI's requirements first (https://pytorch.org/get-started/locally/ for torch).")
    except Exception as e:  # noqa: BLE001 - a broken torch (DLL load failure, ABI mismatch) must be named, not dumped
        return Outcome(NO_TORCH, f"torch is installed in {sys.executable} but does not import: "
                                 f"{type(e).__name__}: {e}",
                       "repair ComfyUI's torch install first, then run install.py again")
    return torch


def requirements(no_download: bool) -> Outcome | None:
    path = os.path.join(HERE, "requirements.txt")
    try:
        with open(path) as f:
            wanted = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    except OSError:
        wanted = []
    if not wanted:
        say("requirements: none beyond ComfyUI's own (torch is never installed or replaced)")
        return None
    from comfy_sage import toolchain

    cmd = toolchain.pip_command(["-r", path])
    if no_download:
        say(f"requirements: --no-download, not installing: {' '.join(wanted)}")
        return None
    say(f"requirements: {' '.join(cmd)}")
    if subprocess.call(cmd, stdin=subprocess.DEVNULL) != 0:
        return Outcome(PIP_FAILED, f"pip could not install the requirements ({' '.join(wanted)}); "
                                   "its own messages are above. Check the network or install them by hand.")
    return None


def gpus(torch) -> list[dict]:
    found = []
    if not torch.cuda.is_available():
        return found
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        found.append({"index": i, "name": p.name, "cc": p.major * 10 + p.minor,
                      "memory_gib": p.total_memory / 2**30})
    return found


def compiler(torch, args, report) -> Outcome | None:
    """nvcc (fetched as NVIDIA's wheel when absent), the header wheels, the host compiler."""
    from comfy_sage import toolchain

    nvcc = toolchain.find_nvcc()
    old = None if nvcc else toolchain.find_nvcc(minimum=None)
    if old:
        say(f"nvcc {old.version} ({old.path}, from {old.origin}) is older than "
            f"{'.'.join(map(str, toolchain.MIN_NVCC))}, which the kernels need: not used")
    wanted = [] if nvcc else toolchain.toolkit_wheels(torch.version.cuda)
    if not nvcc and not wanted:
        # torch built with CUDA 12: no CUDA 12 wheel carries nvcc; CUDA 13's works if the driver runs it.
        driver = toolchain.driver_cuda_version()
        if driver and driver[0] >= 13:
            wanted = toolchain.toolkit_wheels("13.0")
            say(f"torch uses CUDA {torch.version.cuda}; no CUDA 12 wheel has nvcc, and this driver supports "
                f"CUDA {driver[0]}.{driver[1]}, so the library is built with the CUDA 13.0 wheel")
        else:
            return Outcome(NO_NVCC, f"no CUDA compiler: nvcc is not in CUDA_HOME, CUDA_PATH, PATH or this Python's "
                                    f"NVIDIA wheels, and no pip wheel carries an nvcc for torch's CUDA "
                                    f"{torch.version.cuda} (the driver supports "
                                    f"{'.'.join(map(str, driver)) if driver else 'no CUDA version it reports'}).",
                           f"fix: install a CUDA {torch.version.cuda.split('.')[0]}.x toolkit, "
                           f"{'.'.join(map(str, toolchain.MIN_NVCC))} or newer "
                           "(https://developer.nvidia.com/cuda-downloads), set CUDA_HOME to it, run install.py again;",
                           "or update the NVIDIA driver to 580+ (CUDA 13), then install.py fetches nvcc by itself.")
    wanted += toolchain.missing_header_wheels()
    if wanted:
        why = ("build-time headers missing" if nvcc else
               f"no CUDA {'.'.join(map(str, toolchain.MIN_NVCC))}+ toolkit found (CUDA_HOME, CUDA_PATH, PATH)")
        cmd = toolchain.pip_command(wanted)
        if args.no_download:
            return Outcome(NO_NVCC, f"{why}; --no-download, so nothing was installed.",
                           "install them into this Python, then run install.py again:",
                           "    " + " ".join(_quote(c) for c in cmd),
                           "(or install the CUDA toolkit and set CUDA_HOME; the header wheels are needed either way)"
                           if toolchain.missing_header_wheels() else
                           "(or install the CUDA toolkit matching torch and set CUDA_HOME)")
        say(f"{why}: installing {' '.join(wanted)}")
        say("  " + " ".join(_quote(c) for c in cmd))
        if subprocess.call(cmd, stdin=subprocess.DEVNULL) != 0:
            return Outcome(PIP_FAILED, f"pip could not install {' '.join(wanted)} (its messages are above).",
                           "fix: check the network, or install the CUDA toolkit and set CUDA_HOME, then run "
                           "install.py again.")
        nvcc = toolchain.find_nvcc()
        if nvcc is None:
            return Outcome(NO_NVCC, f"pip installed {' '.join(wanted)} but no nvcc appeared in this Python's "
                                    f"site-packages; install the CUDA toolkit and set CUDA_HOME instead.")
    report["nvcc"] = f"{nvcc.version} at {nvcc.path} (from {nvcc.origin})"
    host = toolchain.find_host_compiler()
    if host is None:
        return Outcome(NO_HOST_COMPILER, "no host C++ compiler: nvcc needs one to compile the CPU side of the kernels.",
                       f"fix: {toolchain.host_compiler_hint()}, then run install.py again")
    report["host compiler"] = f"{host.version} at {host.path}"
    return None


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in "*<> ") else arg


def diagnose_build(e, torch) -> Outcome:
    from comfy_sage import toolchain

    nvcc, host = toolchain.find_nvcc(), toolchain.find_host_compiler()
    text = "\n".join(e.lines)
    if "unsupported GNU version" in text or "unsupported Microsoft Visual Studio" in text:
        fix = (f"this nvcc ({nvcc.version if nvcc else '?'}) does not accept this host compiler: install an older "
               "g++ and set CUDAHOSTCXX (e.g. CUDAHOSTCXX=g++-12), or a newer CUDA toolkit")
    elif "Unsupported gpu architecture" in text or "is not defined for option 'gpu-architecture'" in text:
        fix = "this nvcc is too old for the requested GPU: install CUDA 12.8 or newer (13.x for sm_120 is best)"
    elif "cannot find -l" in text or re.search(CUDA_HEADER_MISSING, text):
        fix = "the CUDA toolkit is incomplete: reinstall it, or unset CUDA_HOME so install.py fetches NVIDIA's wheel"
    elif "No such file or directory" in text and toolchain.HEADER_WHEELS:
        fix = ("a header is missing: if it comes from a build-time wheel ("
               f"{', '.join(w.requirement for w in toolchain.HEADER_WHEELS)}), run install.py without --no-download; "
               f"otherwise report it with this output at {ISSUES}")
    else:
        fix = (f"this is most likely a bug in comfy-sage's CUDA sources for this compiler: please report it with "
               f"this output at {ISSUES}")
    stage = "link" if e.kind == "link" else "compile"
    return Outcome(BUILD_FAILED, f"build: the kernels did not {stage}; the compiler said:",
                   *("    " + line for line in e.lines[:40]),
                   f"versions: nvcc {nvcc.version + ' (' + nvcc.origin + ')' if nvcc else '-'}; "
                   f"host {host.version if host else '-'}; torch {torch.__version__} (CUDA {torch.version.cuda or '-'})",
                   f"fix: {fix}",
                   "the pack still works without the cuda kernels: the node uses triton (where available) or "
                   "ComfyUI's attention")


def selftest(report, devices: list[int]) -> Outcome | None:
    """Run comfy_sage.selftest in its own process: a kernel fault must not take this one down."""
    say("self-test: each built kernel against the reference, then what auto runs on one model shape")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p))
    try:
        rc = subprocess.call([sys.executable, "-m", "comfy_sage.selftest", "--devices", ",".join(map(str, devices))],
                             cwd=HERE, env=env,
                             stdin=subprocess.DEVNULL, timeout=900)
    except subprocess.TimeoutExpired:
        rc = "timed out after 900 s"
    if rc == 0:
        report["self-test"] = "passed"
        return None
    report["self-test"] = f"FAILED ({rc})"
    why = (f"the self-test process died with signal {-rc}" if isinstance(rc, int) and rc < 0
           else f"the self-test {rc}" if isinstance(rc, str) else "a kernel disagreed with the reference or the "
           "library did not load (lines above)")
    return Outcome(SELFTEST_FAILED, f"self-test: FAILED: {why}.",
                   f"fix: run python install.py --force; if it fails again, report it with this output at {ISSUES}.",
                   "until then choose backend auto, triton or off in the node, not cuda")


def build_step(torch, targets, args, report, gpu_list) -> Outcome | None:
    from comfy_sage import build

    if args.check:
        paths = {a: build.find_library(a) for a in targets}
        missing = [a for a, p in paths.items() if p is None]
        if missing:
            return Outcome(NOT_BUILT, *(build.why_no_library(a) for a in missing))
        report["library"] = ", ".join(f"{p} (sm_{a})" for a, p in paths.items())
        say("check: the cached library is intact (size and sha256 match its build record)")
    else:
        from comfy_sage import toolchain

        found = None if args.force or toolchain.find_nvcc() else build.find_build(targets)
        if found:
            # No compiler here, but an intact build of these sources: nothing to fetch or compile.
            d, rec = found
            say(f"cache hit: {d / rec['library']} was built {rec.get('built_at', '?')} with nvcc "
                f"{rec.get('nvcc_version', '?')}, which is not on this machine now (--force rebuilds)")
            report["library"] = f"{d / rec['library']} (cache hit)"
            return finish_with_selftest(args, report, targets, gpu_list)
        problem = compiler(torch, args, report)
        if problem:
            return problem
        try:
            result = build.ensure(targets, jobs=args.jobs, force=args.force, progress=say)
        except build.BuildError as e:
            if e.kind == "toolkit":
                return Outcome(NO_NVCC, str(e))
            return diagnose_build(e, torch)
        except OSError as e:
            return Outcome(BUILD_FAILED, f"build: cannot write the build cache: {e}",
                           f"fix: make {build.build_root()} writable (or set COMFY_SAGE_BUILD_DIR), run install.py again")
        rec = result.record
        if result.cached:
            say(f"cache hit: {result.lib} was built {rec.get('built_at', '?')} for "
                f"{', '.join(f'sm_{a}' for a in rec['archs'])} with nvcc {rec.get('nvcc_version', '?')} "
                f"(sources, arch list and compilers unchanged; --force rebuilds)")
        else:
            say(f"built {result.lib} for {', '.join(f'sm_{a}' for a in rec['archs'])} in {rec['seconds']:.0f} s "
                f"({rec['files']} files, {rec['size'] / 2**20:.1f} MiB)")
        report["library"] = f"{result.lib} ({'cache hit' if result.cached else 'built now'})"
    return finish_with_selftest(args, report, targets, gpu_list)


def finish_with_selftest(args, report, targets, gpu_list) -> Outcome | None:
    from comfy_sage import build

    if args.no_self_test:
        report["self-test"] = "skipped (--no-self-test)"
        return None
    # Only the GPUs this library was built for: another GPU here has nothing to test.
    devices = [g["index"] for g in gpu_list if build.target_arch(g["cc"]) in targets]
    if devices:
        return selftest(report, devices)
    report["self-test"] = ("skipped: no GPU here" if not gpu_list else
                           f"skipped: no GPU here is one of {', '.join(f'sm_{a}' for a in targets)}")
    return None


def print_report(torch, report, gpu_list) -> None:
    say()
    say("comfy-sage environment")
    rows = [("OS", f"{platform.system()} {platform.release()} ({platform.machine()})"),
            ("Python", f"{platform.python_version()} ({sys.executable})")]
    if torch is not None:
        rows.append(("torch", f"{torch.__version__} (CUDA {torch.version.cuda or '-: a CPU build'})"))
        for g in gpu_list:
            rows.append((f"GPU {g['index']}", f"{g['name']}, sm_{g['cc']}, {g['memory_gib']:.1f} GiB"))
        if not gpu_list:
            rows.append(("GPU", "none visible to torch"))
    if torch is not None and "nvcc" not in report:
        # Nothing was compiled: still say what a build would use, it is what users ask about.
        from comfy_sage import toolchain

        nvcc, host = toolchain.find_nvcc(), toolchain.find_host_compiler()
        report["nvcc"] = f"{nvcc.version} at {nvcc.path} (from {nvcc.origin}; not used)" if nvcc else "none found"
        report["host compiler"] = f"{host.version} at {host.path}" if host else "none found"
    for key in ("nvcc", "host compiler", "library", "self-test"):
        if key in report:
            rows.append((key, report[key]))
    if torch is not None:
        try:
            from comfy_sage import available_backends

            for name, why in available_backends().items():
                rows.append((f"backend {name}", "available" if why is None else f"unavailable: {why}"))
        except Exception as e:  # noqa: BLE001 - the report must finish whatever the pack's state
            rows.append(("backends", f"could not be listed: {type(e).__name__}: {e}"))
    for key, value in rows:
        say(f"  {key + ':':<19}{value}")


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as e:
        return USAGE if e.code else READY
    started = time.perf_counter()
    torch = import_torch()
    report: dict[str, str] = {}
    if isinstance(torch, Outcome):
        return finish(None, report, [], torch, started)
    sys.path.insert(0, HERE)
    from comfy_sage import build

    gpu_list = gpus(torch)
    try:
        targets = (sorted({int(a) for a in args.arch.split(",")}) if args.arch else
                   sorted({t for t in (build.target_arch(g["cc"]) for g in gpu_list) if t is not None}))
        for a in targets:
            build.gencode(a)
    except ValueError:
        return finish(torch, report, gpu_list, Outcome(
            USAGE, f"--arch: expected a comma-separated list from {','.join(map(str, build.SUPPORTED_ARCHS))}, "
                   f"got {args.arch!r}"), started)
    outcome = None if args.check else requirements(args.no_download)
    if outcome is None:
        if not targets:
            unseen = [] if gpu_list else build.detect_archs()  # nvidia-smi sees GPUs this torch does not
            if unseen:
                msg = (f"an NVIDIA GPU is present (nvidia-smi: {', '.join(f'sm_{a}' for a in unseen)}) but this torch "
                       f"cannot use it ({'a CPU build' if torch.version.cuda is None else 'CUDA does not initialise'}): "
                       "ComfyUI runs on the CPU and nothing is built. Install a CUDA build of torch into ComfyUI's "
                       "Python (https://pytorch.org/get-started/locally/), then run install.py again")
            elif gpu_list:
                ccs = ", ".join(f"sm_{g['cc']}" for g in gpu_list)
                msg = (f"no GPU here that the cuda kernels support ({ccs}; they are built for "
                       f"{', '.join(f'sm_{a}' for a in build.SUPPORTED_ARCHS)}): nothing to build; the node uses "
                       f"triton where it runs, else ComfyUI's attention")
            elif torch.version.cuda is None:
                msg = ("no NVIDIA GPU visible (this torch is a CPU build): nothing to build; the node uses ComfyUI's "
                       "attention here")
            else:
                msg = "no NVIDIA GPU visible to torch: nothing to build; the node uses ComfyUI's attention here"
            outcome = Outcome(READY, msg)
        elif os.name == "nt" and not args.arch and not args.check:
            # Not built or tested on Windows yet (README, "Windows"): a build that cannot be expected to
            # work must not make ComfyUI-Manager report the pack as failed.
            outcome = Outcome(READY, "Windows: the native CUDA library is not built automatically in this release "
                                     "(untested there; README.md, 'Windows'). The node runs the triton backend "
                                     "(pip install triton-windows) or ComfyUI's attention. To try the build anyway: "
                                     "python install.py --arch <your GPU's, e.g. 89>")
        else:
            outcome = build_step(torch, targets, args, report, gpu_list) or Outcome(
                READY, f"ready: the cuda kernels for {', '.join(f'sm_{a}' for a in targets)} are built"
                       + (" and self-tested" if report.get("self-test") == "passed" else
                          f" (self-test {report.get('self-test', 'not run')})"))
    return finish(torch, report, gpu_list, outcome, started)


def finish(torch, report, gpu_list, outcome: Outcome, started: float) -> int:
    print_report(torch, report, gpu_list)
    say()
    for line in outcome.lines:
        say(line)
    say(f"install.py: exit {outcome.code} after {time.perf_counter() - started:.0f} s")
    return outcome.code


def run(argv=None) -> int:
    try:
        return main(argv)
    except Exception:  # noqa: BLE001 - a bug here must still end with a code and a request, not a bare traceback
        import traceback

        traceback.print_exc()
        say(f"install.py: unexpected error (a bug in install.py): please report it with this output at {ISSUES}")
        say("install.py: exit 1")
        return 1


if __name__ == "__main__":
    os.chdir(HERE)
    sys.exit(run())
