#!/usr/bin/env bash
# The prepared GPU check of issue 23, sized for 8 minutes on one H100/H200: full-size SVD-XT with random weights
# through svdbatch's real pipeline (default, step cache, compile_unet, 4 guidance-free steps with SAMPLER), 3 videos
# each, against bare diffusers; prints s/video, peak GPU memory and the ratio to bare diffusers; first a row per
# model family (Wan 2.2 TI2V 5B, LTX-Video 2B): one full-size transformer step with random weights, s and TFLOP/s.
#   benchmarks/device_check.sh              # on the GPU machine, in the installed environment
#   benchmarks/device_check.sh --reduced    # the same steps on the tiny model on a CPU, in under 2 minutes
# PYTHON: the interpreter of the environment (default: .venv/bin/python when present, else python3).
# SAMPLER: model.scheduler.name of the 4-step run (default: consistency); a checkout without model.scheduler says
# so and runs the 4 steps with the model's own sampler.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export RAY_DEDUP_LOGS=1 TOKENIZERS_PARALLELISM=false
exec "$PYTHON" benchmarks/device_check.py --sampler "${SAMPLER:-consistency}" "$@"
