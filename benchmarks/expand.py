"""CPU time of the feed's bookkeeping in one process: ``expand_batch`` on N manifest rows (1 and 3 variants, a quarter
as many distinct images as rows) and the resume decision on N items all done or all changed. Best of 5, CPU-s.

    python benchmarks/expand.py [--rows 200000] [--tree /path/to/other/checkout]

``--tree`` times another checkout's code (its folder holding ``svdbatch/``), for a before/after on the same machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def best(action, tries: int = 5) -> float:
    spent = []
    for _ in range(tries):
        started = time.process_time()
        action()
        spent.append(time.process_time() - started)
    return min(spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--tree", default=str(ROOT))
    args = parser.parse_args()
    sys.path.insert(0, args.tree)
    import pyarrow as pa

    from svdbatch.items.expand import expand_batch
    from svdbatch.spec.load import build_spec

    try:
        from svdbatch.items.decide import decide
    except ImportError:  # a checkout from before the decision was one rule
        from svdbatch.render.stages import _decide as decide

    rows = args.rows
    images = [f"/images/{index % (rows // 4 or 1)}.png" for index in range(rows)]
    table = pa.table({"key": [f"sku-{index:08d}" for index in range(rows)], "image": images})
    identities = {"model": "hub:org/model@abc", "sources": {uri: f"size=1,modified={uri}" for uri in set(images)}}
    for variants, sweep in ((1, []), (3, [10, 127, 300])):
        spec = build_spec({"manifest": {"path": "/m.parquet"}, "output": {"url": "/out"},
                           "seeds": {"variants": variants, "motion_sweep": sweep}})
        seconds = best(lambda spec=spec: expand_batch(table, spec, "run", "/out", None, identities))
        print(f"expand_batch, {rows:,} rows x {variants} variants: {seconds:.3f} CPU-s")
    items = expand_batch(table, spec, "run", "/out", None, identities).slice(0, rows)
    for case in ("done", "changed"):
        committed = {"fingerprint": items["fingerprint"] if case == "done" else pa.array(["x"] * rows),
                     "status": pa.array(["ok"] * rows), "source_version": items["source_version"],
                     "model_identity": items["model_identity"]}
        batch = items
        for name, values in committed.items():
            batch = batch.append_column("committed_" + name, values)
        print(f"decision, {rows:,} items {case}: {best(lambda batch=batch: decide(batch, spec)):.3f} CPU-s")


if __name__ == "__main__":
    main()
