# Sourced by the GPU scripts that run a real ComfyUI (bench/e2e_gpu.sh, bench/public_sage_gpu.sh),
# with $out set: the wheels the device image lacks into /tmp/site (.whl-e2e/), ComfyUI 0.8.0 from
# .dev/ into /tmp/comfy ($comfy: its root), and this package built for sm_90 by install.py.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl-e2e/*.whl || exit 1
mkdir -p /tmp/comfy && tar xzf .dev/ComfyUI-0.8.0.tar.gz -C /tmp/comfy
comfy=$(dirname "$(ls -d /tmp/comfy/*/main.py /tmp/comfy/main.py 2>/dev/null | head -1)")
python3 install.py --arch 90 --jobs 16 --no-self-test > "$out/install.log" 2>&1 || { tail -20 "$out/install.log"; exit 1; }
