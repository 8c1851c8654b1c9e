"""What the cluster can run: GPU or CPU, how many actors, and whether the actor pool and the CPU stages fit together.

Plain rules over a ``ClusterShape`` that ray/cluster.py reads from Ray, so each one is unit-tested without a cluster.
A job never falls back to the CPU because no GPU is there *yet*: ``auto`` means GPU whenever the cluster has GPUs or
its autoscaler may add some, and a job that needs a GPU on a cluster that can never have one fails before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from svdbatch.errors import UserError
from svdbatch.spec.config import ComputeSpec, ModelSpec

UNBOUNDED = -1  # an autoscaler node type without a node limit


class CapacityError(UserError, RuntimeError):
    """The job cannot run on this cluster as specified; phrased as one line naming the setting."""


@dataclass(frozen=True)
class NodeType:
    """A kind of node the autoscaler can add."""

    name: str
    resources: dict[str, float]
    max_count: int


@dataclass(frozen=True)
class ClusterShape:
    """The alive nodes' total resources, and the node types an autoscaler can add.

    ``node_types`` is empty without an autoscaler, and None when an autoscaler runs whose node types the driver cannot
    read (Ray's v1 autoscaler does not publish them): then GPUs may come, and only the alive nodes are checked.
    """

    nodes: list[dict[str, float]]
    node_types: list[NodeType] | None = field(default_factory=list)

    @property
    def gpus_now(self) -> float:
        return sum(node.get("GPU", 0) for node in self.nodes)

    def _addable(self) -> list[NodeType]:
        return [kind for kind in self.node_types or [] if kind.max_count != 0]

    def may_get_gpus(self) -> bool:
        return self.gpus_now > 0 or self.node_types is None or any(k.resources.get("GPU") for k in self._addable())

    def max_gpus(self) -> float | None:
        """The most GPUs the cluster can ever have; None when unknown or unbounded."""
        if self.node_types is None:
            return None
        typed = 0.0
        for kind in self._addable():
            gpus = kind.resources.get("GPU", 0)
            if gpus and kind.max_count == UNBOUNDED:
                return None
            typed += gpus * kind.max_count
        return max(self.gpus_now, typed)

    def slots(self) -> list[tuple[dict[str, float], int]]:
        """Every node shape with how many of it there can be (alive nodes count once each)."""
        shapes = [(node, 1) for node in self.nodes]
        return shapes + [(kind.resources, kind.max_count) for kind in self._addable()]


def wants_gpu(model: ModelSpec, cluster: ClusterShape) -> bool:
    """GPU when asked (device cuda, or a half-precision dtype); for auto, whenever GPUs are there or may come."""
    if model.device == "cpu":
        return False
    if model.device == "cuda" or model.dtype in ("fp16", "bf16"):
        return True
    return cluster.may_get_gpus()


def check_device(model: ModelSpec, cluster: ClusterShape) -> bool:
    """Whether the generation actors ask for GPUs; fails when the model needs one the cluster can never have."""
    gpu = wants_gpu(model, cluster)
    if gpu and not cluster.may_get_gpus():
        reason = "model.device: cuda" if model.device == "cuda" else f"model.dtype: {model.dtype}"
        raise CapacityError(
            f"{reason} needs a GPU, but the cluster has none and no autoscaler node type with GPUs; "
            "set model.device: cpu (and model.dtype: auto) to run on CPUs"
        )
    return gpu


@dataclass(frozen=True)
class PoolSize:
    min: int
    max: int | None  # None: no limit but the cluster's
    initial: int


def pool_size(compute: ComputeSpec, cluster: ClusterShape, gpu: bool) -> PoolSize:
    """The actor pool's bounds: what the spec fixes, the rest from the GPUs there are and can be."""
    if isinstance(compute.actors, int):
        return PoolSize(compute.actors, compute.actors, compute.actors)
    wanted = compute.actors
    if gpu:
        now = int(cluster.gpus_now // compute.gpus_per_actor)
        top = cluster.max_gpus()
        fallback_max = None if top is None else max(1, int(top // compute.gpus_per_actor))
    else:
        now, fallback_max = 1, 1
    most = wanted.max if wanted.max is not None else (None if fallback_max is None else max(wanted.min, fallback_max))
    initial = wanted.initial or max(wanted.min, min(now, most) if most is not None else now)
    return PoolSize(wanted.min, most, initial)


def _fits(need: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(name, 0) >= amount for name, amount in need.items() if amount)


def check_fits(compute: ComputeSpec, cluster: ClusterShape, gpu: bool, task_cpus: float) -> None:
    """Fail, naming the setting, unless one actor and one CPU task can run at the same time somewhere.

    An actor that takes every CPU of the only nodes it fits on starves the tasks that feed it its items: the job
    would sit idle forever.
    """
    actor = {"CPU": compute.cpus_per_actor, "GPU": compute.gpus_per_actor if gpu else 0}
    task = {"CPU": max(compute.cpus_per_task, task_cpus)}
    slots = cluster.slots()
    homes = [(node, count) for node, count in slots if _fits(actor, node)]
    if not homes and cluster.node_types is None:
        return  # the nodes an unknown autoscaler adds may fit; the watchdog speaks up if none ever does
    if not homes:
        if gpu and not any(_fits({"GPU": compute.gpus_per_actor}, node) for node, _ in slots):
            most = max((node.get("GPU", 0) for node, _ in slots), default=0)
            raise CapacityError(
                f"compute.gpus_per_actor: {compute.gpus_per_actor:g} fits no node (the most GPUs on a node is {most:g})"
            )
        candidates = [node for node, _ in slots if not gpu or node.get("GPU", 0) >= compute.gpus_per_actor]
        most = max((node.get("CPU", 0) for node in candidates), default=0)
        raise CapacityError(
            f"compute.cpus_per_actor: {compute.cpus_per_actor:g} fits no node that could hold an actor "
            f"(the most CPUs there is {most:g})"
        )
    for home, count in homes:
        together = {name: actor.get(name, 0) + task.get(name, 0) for name in ("CPU", "GPU")}
        elsewhere = any(_fits(task, node) and (node is not home or count != 1) for node, _ in slots)
        if _fits(together, home) or elsewhere:
            return
    most = max(node.get("CPU", 0) for node, _ in homes)
    raise CapacityError(
        f"compute.cpus_per_actor: {compute.cpus_per_actor:g} leaves no room for the tasks that feed the actors "
        f"({task['CPU']:g} CPU) on nodes with {most:g} CPUs and no other node to run them; lower it"
    )
