#!/usr/bin/env bash
# The one prepared GPU check, for a session that is lent a GPU machine.  Run it from
# the repository root through the device tool, e.g.
#
#     run(command="bash scripts/gpu_check.sh", timeout_s=600)
#
# It installs the package (editable, no dependencies: the machine's python3 has CuPy,
# PyTorch, Numba, h5py, OpenCV, Pillow, tqdm, pytest), compile-checks the CUDA
# sources, runs tests/test_gpu.py and scripts/bench_gpu.py, and leaves in $OUT:
#     env.txt          GPU, driver, package versions, compile check
#     gpu_tests.log    pytest output (failures summarised at the end, slowest tests)
#     bench_gpu.log    the te / PyTorch table (targets: <= 1.5x at batch 1, <= 1.2x at 32)
#     bench_gpu.json   the same numbers
#     bench_layers.log per-layer times at batch 1 and 32 (only if time is left)
# Each step has its own time limit, so one that hangs cannot eat the others' time;
# the whole script stays under about 8 minutes.
set -u -o pipefail
OUT=${OUT:-$(mktemp -d)}
export PYTHONUNBUFFERED=1
start=$SECONDS
step() { echo; echo "=== $* ($((SECONDS - start)) s)"; }

step "environment"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c "import sys, numpy, cupy, torch, numba; print('python', sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__, 'torch', torch.__version__, 'numba', numba.__version__)"
} 2>&1 | tee "$OUT/env.txt"

step "install (editable, no deps)"
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -n 5
if ! python3 -c "import tinygrad_explain.kernels.gpu" 2>/dev/null; then
    echo "editable install not importable; falling back to PYTHONPATH + a kernels link"
    [ -e tinygrad_explain/kernels ] || ln -s ../kernels tinygrad_explain/kernels
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    python3 -c "import tinygrad_explain.kernels.gpu" || exit 1
fi

step "compile check of the .cu sources (nvcc and NVRTC)"
timeout 120 python3 scripts/check_cuda_sources.py 2>&1 | tee -a "$OUT/env.txt"

step "tests/test_gpu.py"
timeout 300 python3 -m pytest -q -rfE --durations=15 -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"

step "bench_gpu.py"
timeout 200 python3 scripts/bench_gpu.py --json "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench_gpu.log"

if [ $((SECONDS - start)) -lt 420 ]; then
    step "bench_gpu.py --layers (torchvision)"
    timeout 60 python3 scripts/bench_gpu.py --variants torchvision --no-class-model --layers --repeats 5 2>&1 \
        | tee "$OUT/bench_layers.log"
fi
step "done"
