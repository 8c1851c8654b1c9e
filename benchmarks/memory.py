"""Peak memory of the driver and the Ray workers for a 100-row and a 1,000-row manifest.

    python benchmarks/memory.py [--rows 100,1000]

Each size runs in its own process with its own local Ray cluster, at the smallest render size (32x32, 2 frames,
1 step) so the run is about the pipeline's bookkeeping, not the model. A sampler thread (common.Peaks) reads the RSS
of the driver and of every process below it (raylet, object store, workers) every 0.2 s. Target: the 1,000-row peaks
within 10% of the 100-row peaks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Peaks  # noqa: E402


def child(rows: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from svdbatch.demo import sample_image
    from svdbatch.ray import driver
    from svdbatch.spec.load import build_spec

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        paths = []
        for index in range(8):
            path = root / f"{index}.png"
            sample_image(index, 160, 90).save(path)
            paths.append(str(path))
        keys = [f"row-{index:06d}" for index in range(rows)]
        pq.write_table(pa.table({"key": keys, "image": [paths[i % 8] for i in range(rows)]}), root / "m.parquet")
        spec = build_spec(
            {
                "manifest": {"path": str(root / "m.parquet")},
                "output": {"url": str(root / "out")},
                "render": {"width": 32, "height": 32, "num_frames": 2, "num_inference_steps": 1, "fps": 4},
                "compute": {"actors": 1, "batch_size": 4, "cpus_per_actor": 1, "cpus_per_task": 0.5},
                "video": {"preset": "ultrafast"},
            }
        )
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        peaks = Peaks()
        started = time.perf_counter()
        summary = driver.run(spec, progress=False)
        wall = time.perf_counter() - started
        peaks.stop()
        ray.shutdown()
    return {
        "rows": rows,
        "rendered": summary.rendered,
        "wall_s": wall,
        **peaks.mib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="100,1000")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    results = []
    for rows in (int(value) for value in args.rows.split(",")):
        done = subprocess.run([sys.executable, __file__, "--child", str(rows)], capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"the {rows}-row run failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{'rows':>6}{'rendered':>10}{'wall s':>8}{'driver MiB':>12}{'max worker MiB':>16}{'all processes MiB':>19}")
    for result in results:
        print(
            f"{result['rows']:>6}{result['rendered']:>10}{result['wall_s']:>8.1f}{result['driver']:>12.0f}"
            f"{result['worker']:>16.0f}{result['cluster']:>19.0f}"
        )
    if len(results) > 1:
        first, last = results[0], results[-1]
        for name in ("driver", "worker", "cluster"):
            print(f"{name} peak growth {first['rows']} -> {last['rows']} rows: {last[name] / first[name] - 1:+.1%}")


if __name__ == "__main__":
    main()
