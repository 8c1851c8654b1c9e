"""Test-only fault injection for Ray workers: put this folder on PYTHONPATH and SVDBATCH_TEST_FAULTS=<plan.json>.

When a worker imports svdbatch.generate, its ``call_pipeline`` is wrapped to raise the errors a GPU would, as the
plan (re-read at every call) says:
  {"max_batch": 1, "max_decode_chunk": 2}      CUDA out of memory above these sizes
  {"always_oom": ["k9"]}                        out of memory for these keys at any size
  {"lose_device": {"k1": 2}, "markers": DIR}    "CUDA error: an illegal memory access", for k1 twice in all processes
Production code knows nothing of this; it is how the actor pool's healing is tested on CPU.
"""

import importlib.abc
import importlib.util
import json
import os
import sys


def _plan():
    with open(os.environ["SVDBATCH_TEST_FAULTS"]) as handle:
        return json.load(handle)


def _once_more(markers, key, times):
    """True for the first ``times`` calls on ``key`` across every process (one marker file per occurrence)."""
    for index in range(times):
        try:
            os.close(os.open(os.path.join(markers, f"{key}.{index}"), os.O_CREAT | os.O_EXCL))
            return True
        except FileExistsError:
            continue
    return False


def _inject(module):
    import torch

    real = module.call_pipeline

    def call_pipeline(pipe, images, seeds, params, device, cache=None):
        plan = _plan()
        key = params["key"]
        if len(images) > plan.get("max_batch", len(images)) or key in plan.get("always_oom", []):
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (batch {len(images)})")
        if params["decode_chunk_size"] > plan.get("max_decode_chunk", params["decode_chunk_size"]):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB (decode)")
        times = plan.get("lose_device", {}).get(key, 0)
        if times and _once_more(plan["markers"], key, times):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(pipe, images, seeds, params, device, cache)

    module.call_pipeline = call_pipeline


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "svdbatch.generate":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            _inject(module)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("SVDBATCH_TEST_FAULTS"):
    sys.meta_path.insert(0, _Finder())
