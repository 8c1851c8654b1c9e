"""The elastic-cluster rules without Ray: device resolution, pool sizing, fit checks, the OOM policy, the watchdog."""

from __future__ import annotations

import pytest
import torch
from helpers import make_spec

from svdbatch.render import faults
from svdbatch.run.capacity import CapacityError, ClusterShape, NodeType, PoolSize, check_device, check_fits, pool_size
from svdbatch.run.watchdog import Watchdog
from svdbatch.spec.config import SpecError

HEAD = {"CPU": 2}
GPU_TYPE = NodeType("gpu", {"CPU": 4, "GPU": 1}, max_count=2)
STATIC = ClusterShape([HEAD])  # no autoscaler: these nodes are all there will ever be
AUTOSCALING = ClusterShape([HEAD], [GPU_TYPE])  # no GPU node yet, two can come
UNKNOWN_TYPES = ClusterShape([HEAD], None)  # an autoscaler runs, its node types are not published


def _spec(model=None, **compute):
    return make_spec("m.parquet", "out", model=model or {}, compute=compute)


@pytest.mark.parametrize(
    ("model", "cluster", "gpu"),
    [
        ({}, STATIC, False),  # auto on a cluster that can never have GPUs: CPU
        ({}, AUTOSCALING, True),  # auto with no GPU *yet*: GPU, the pool asks and the autoscaler adds nodes
        ({}, UNKNOWN_TYPES, True),
        ({}, ClusterShape([HEAD, {"CPU": 1, "GPU": 2}]), True),
        ({"device": "cpu"}, AUTOSCALING, False),
        ({"dtype": "fp16"}, AUTOSCALING, True),
        ({"device": "cuda"}, UNKNOWN_TYPES, True),
    ],
)
def test_device_resolution_never_falls_back_to_cpu_while_gpus_may_come(model, cluster, gpu):
    assert check_device(_spec(model).model, cluster) is gpu


@pytest.mark.parametrize(
    ("model", "setting"), [({"device": "cuda"}, "model.device: cuda"), ({"dtype": "bf16"}, "model.dtype: bf16")]
)
def test_gpu_model_on_a_cluster_that_can_never_have_gpus_fails_at_once(model, setting):
    with pytest.raises(CapacityError, match=f"{setting} needs a GPU, but the cluster has none"):
        check_device(_spec(model).model, STATIC)


def test_default_pool_starts_small_on_an_empty_autoscaling_cluster_and_grows_to_its_gpus():
    compute = _spec(actors={"min": 1}).compute
    assert pool_size(compute, AUTOSCALING, gpu=True) == PoolSize(min=1, max=2, initial=1)
    assert pool_size(compute, UNKNOWN_TYPES, gpu=True) == PoolSize(min=1, max=None, initial=1)
    four_gpus = ClusterShape([HEAD, {"CPU": 8, "GPU": 4}])
    assert pool_size(compute, four_gpus, gpu=True) == PoolSize(min=1, max=4, initial=4)
    assert pool_size(compute, STATIC, gpu=False) == PoolSize(min=1, max=1, initial=1)
    assert pool_size(_spec(actors=3).compute, AUTOSCALING, gpu=True) == PoolSize(3, 3, 3)
    explicit = _spec(actors={"min": 2, "max": 6, "initial": 3}).compute
    assert pool_size(explicit, AUTOSCALING, gpu=True) == PoolSize(2, 6, 3)


def test_actor_range_and_renamed_field_fail_with_one_line():
    with pytest.raises(SpecError, match="compute.num_actors: renamed, use compute.actors"):
        _spec(num_actors=2)
    with pytest.raises(SpecError, match=r"compute.actors: need min <= initial <= max"):
        _spec(actors={"min": 3, "max": 2})
    with pytest.raises(SpecError, match="compute.actors: 0 is not allowed"):
        _spec(actors=0)


def test_an_actor_that_takes_every_cpu_of_the_only_node_is_refused_before_any_work():
    one_node = ClusterShape([{"CPU": 2}])
    no_room = r"compute.cpus_per_actor: {} leaves no room for the tasks that feed the actors \({} CPU\)"
    with pytest.raises(CapacityError, match=no_room.format(2, 1)):
        check_fits(_spec(cpus_per_actor=2, cpus_per_task=1).compute, one_node, gpu=False, task_cpus=0.25)
    check_fits(_spec(cpus_per_actor=1, cpus_per_task=1).compute, one_node, gpu=False, task_cpus=0.25)
    # Small CPU tasks, but the task that cuts the items into blocks takes a whole CPU (pipeline.CUT_CPUS).
    with pytest.raises(CapacityError, match=no_room.format(1.5, 1)):
        check_fits(_spec(cpus_per_actor=1.5, cpus_per_task=0.25).compute, one_node, gpu=False, task_cpus=1.0)
    # The same actor is fine when another node (here: the CPU-only head) runs the CPU stages.
    check_fits(_spec(cpus_per_actor=4).compute, AUTOSCALING, gpu=True, task_cpus=0.25)


def test_actor_resources_no_node_or_node_type_offers_are_named():
    with pytest.raises(CapacityError, match=r"compute.gpus_per_actor: 2 fits no node \(the most GPUs on a node is 1\)"):
        check_fits(_spec(gpus_per_actor=2).compute, AUTOSCALING, gpu=True, task_cpus=0.25)
    with pytest.raises(CapacityError, match=r"compute.cpus_per_actor: 8 fits no node .* \(the most CPUs there is 4\)"):
        check_fits(_spec(cpus_per_actor=8).compute, AUTOSCALING, gpu=True, task_cpus=0.25)
    check_fits(_spec(gpus_per_actor=2).compute, UNKNOWN_TYPES, gpu=True, task_cpus=0.25)  # unknown types may fit


def test_out_of_memory_splits_the_batch_then_halves_the_decode_chunk_then_gives_up():
    assert faults.after_out_of_memory(4, 8, 24) == faults.Retry(split=True, decode_chunk_size=8)
    assert faults.after_out_of_memory(1, 8, 24) == faults.Retry(split=False, decode_chunk_size=4)
    assert faults.after_out_of_memory(1, 7, 25) == faults.Retry(split=False, decode_chunk_size=1)  # divisor of 25
    assert faults.after_out_of_memory(1, 1, 25) is None


def test_error_kinds():
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert faults.is_out_of_memory(oom) and not faults.is_device_lost(oom)
    for text in ("CUDA error: an illegal memory access was encountered", "CUDA error: device-side assert triggered"):
        assert faults.is_device_lost(RuntimeError(text)) and not faults.is_out_of_memory(RuntimeError(text))
    assert not faults.is_device_lost(ValueError("bad image"))


def test_watchdog_waits_for_gpu_workers_then_ends_the_job():
    watchdog = Watchdog(_spec(gpu_wait_s=100, stall_report_s=30).compute, gpu=True, wanted=2, now=0)
    assert watchdog.check(0, 5, lambda: "GPU 0/0 free").line is None
    assert watchdog.check(0, 40, lambda: "").line == "svdbatch: waiting for GPU workers: 0/2 up, 40 s"
    fatal = watchdog.check(0, 100, lambda: "GPU 0/0 free").fatal
    assert fatal.startswith("no GPU worker came up within 100 s (compute.gpu_wait_s); GPU 0/0 free")


def test_watchdog_reports_a_stall_with_what_is_pending_and_ends_it():
    watchdog = Watchdog(_spec(stall_report_s=60, stall_timeout_s=300).compute, gpu=False, wanted=1, now=0)
    watchdog.check(1, 10, str)  # the actor came up at 10 s
    watchdog.finished(2, 20)
    assert watchdog.check(1, 70, str).line is None
    assert watchdog.check(1, 81, lambda: "CPU 0/2 free").line == "svdbatch: no item finished for 61 s; CPU 0/2 free"
    assert watchdog.check(1, 82, str).line is None  # once per stall_report_s
    assert watchdog.check(1, 320, lambda: "CPU 0/2 free").fatal == (
        "no item finished for 300 s (compute.stall_timeout_s); CPU 0/2 free"
    )
