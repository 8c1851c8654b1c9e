"""The command line of ``svdbatch``: every command, option and help text (the CLI reference under docs/reference/ is
generated from it), and nothing that runs a command: cli/__init__.py does."""

from __future__ import annotations

import argparse

from svdbatch import __version__
from svdbatch.cli.plan import DEFAULT_GPU, DEFAULT_GPUS

PRUNE_HELP = "Remove what left the manifest: delete its videos, mark its rows 'removed' (output.prune=true)."
TAKE_OVER_HELP = (
    "Take the output's lease from the run that holds it, even if its lease has not expired: only when that run is "
    "dead (a live one stops when it notices). Without it a second run on the same output refuses."
)
LEASE_WAIT_HELP = (
    "Seconds to wait for the output's lease while a run on another machine (or one that cannot be checked) holds "
    "it, so that an automatic retry outlives a dead predecessor's lease (default: lease.ttl_s + 30, i.e. 90). A "
    "holder that died on this machine is replaced at once; one alive here, or still renewing after the wait, refuses."
)
DEMO_DIR_HELP = (
    "Folder for the demo's inputs and outputs; under `ray job submit --working-dir`, a durable path outside Ray's "
    "temporary copy of the working dir (required there)."
)
PLAN_PRUNE_HELP = "Plan as 'run --prune' would: count what left the manifest as to remove (plan deletes nothing)."
STORE_SET = {  # --set on the commands without a job spec: storage options only
    "action": "append",
    "default": [],
    "metavar": "storage_options.NAME=VALUE",
    "help": "An fsspec option for every URL the command reads or writes (endpoint, region, ...); repeatable.",
}
SET_HELP = "Override one spec field, e.g. --set render.fps=8; repeatable, applied over the YAML."
JOB_HELP = (
    "Job spec YAML: a path or a URL (s3://, gs://, az://, file://; credentials from the environment or --set "
    "storage_options.NAME=VALUE). Relative paths in it resolve against its folder."
)
TRY_HELP = (
    "An alternative to compare with the job's settings, one setting per value, e.g. render.num_inference_steps=25,4 "
    "or model.step_cache.enabled=true; repeatable; space-separated pairs in one --try are combined."
)
STAGE_HELP = (
    "Copy exactly the files the pipeline loads (the variant's safetensors, every config) to URL, verified by sha256; "
    "a rerun copies only what is missing or changed. Jobs then use model.source: URL."
)
EXIT_CODES = """exit status:
  0    every item rendered or was already done
  1    some items failed (error rows in the table), or a fatal problem stopped the job
  2    bad command line or job spec
  130  interrupted (SIGINT, Ctrl-C)
  143  stopped (SIGTERM, e.g. ray job stop)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="svdbatch", description="Batch image-to-video with Stable Video Diffusion.")
    parser.add_argument("--version", action="version", version=f"svdbatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help=SET_HELP)
        command.add_argument("--verbose", action="store_true", help="Show Ray's logs and full tracebacks.")
        command.add_argument("--quiet", action="store_true", help="No progress bars; only the summary line.")
        return command

    run = add("run", "Render every item of a job spec.")
    run.add_argument("spec_path", metavar="job", help=JOB_HELP)
    run.add_argument("--prune", action="store_true", help=PRUNE_HELP)
    run.add_argument("--take-over", action="store_true", help=TAKE_OVER_HELP)
    run.add_argument("--lease-wait", type=float, metavar="SECONDS", help=LEASE_WAIT_HELP)
    run.epilog, run.formatter_class = EXIT_CODES, argparse.RawDescriptionHelpFormatter
    demo = add("demo", "Build the tiny model and sample images, then run the real job on a local Ray cluster.")
    demo.add_argument("--dir", default="demo-output", help=DEMO_DIR_HELP)
    demo.add_argument("--images", type=int, default=6, help="How many sample images to generate.")
    plan = add("plan", "Check a job spec and its whole manifest, count the work and estimate GPU time; no GPU used.")
    plan.add_argument("spec_path", metavar="job", help=JOB_HELP)
    plan.add_argument("--prune", action="store_true", help=PLAN_PRUNE_HELP)
    plan.add_argument(
        "--gpus", type=int, help=f"Cluster GPUs, for the wall-time estimate (not given: {DEFAULT_GPUS}, assumed)."
    )
    plan.add_argument(
        "--gpu",
        help="GPU kind for the estimate (H200, H100, H100-PCIe, A100, L40S, L4, T4, ...; any other with --tflops) "
        f"(not given: {DEFAULT_GPU}, assumed).",
    )
    plan.add_argument("--tflops", type=float, help="Peak dense fp16 TFLOP/s of the GPU, for kinds not listed.")
    plan.add_argument("--seconds-per-video", type=float, help="A measured latency instead of the built-in estimate.")
    tune = add("tune", "Render a fixed sample of the job under its settings and alternatives; compare cost and frames.")
    tune.add_argument("spec_path", metavar="job", help=JOB_HELP)
    tune.add_argument("--sample", type=int, default=8, help="Manifest rows to render (the same ones every time).")
    tune.add_argument("--try", dest="tries", action="append", default=[], metavar="KEY=V1,V2", help=TRY_HELP)
    tune.add_argument("--dir", help="Folder or URL for tune's runs and page (default: OUTPUT/_tune/TIMESTAMP).")
    _add_output_commands(commands)
    return parser


def _add_output_commands(commands) -> None:
    """The commands that take no job spec: build a manifest, report an output, print the spec reference, stage
    weights."""
    scan = commands.add_parser("manifest", help="Build a manifest from a folder or object-store prefix of images.")
    scan.add_argument("source", help="Folder or URL prefix to scan (recursively).")
    scan.add_argument("-o", "--output", required=True, help="Manifest to write (.parquet, local or URL).")
    scan.add_argument("--column", action="append", default=[], metavar="NAME=VALUE", help="A constant column.")
    scan.add_argument("--params", help="CSV with a 'key' column (relative path) and per-row parameter columns.")
    scan.add_argument("--set", **STORE_SET)
    scan.add_argument("--verbose", action="store_true", help="Full tracebacks.")
    report = commands.add_parser("report", help="Write an HTML gallery of an output: OUTPUT/report/index.html.")
    report.add_argument("output", help="The job's output URL or folder.")
    report.add_argument("--set", **STORE_SET)
    report.add_argument("--verbose", action="store_true", help="Full tracebacks.")
    commands.add_parser("spec", help="Print the job spec reference.")
    model = commands.add_parser("model", help="Model weights: stage them once in object storage.")
    stage = model.add_subparsers(dest="model_command", required=True).add_parser("stage", help=STAGE_HELP)
    stage.add_argument("source", help="Hub id (org/name), local pipeline folder, URL of one, or svdbatch:tiny.")
    stage.add_argument("url", help="Where to stage it: an fsspec URL (s3://, gs://, az://) or a folder.")
    stage.add_argument("--variant", help="Weight variant the jobs load (model.variant), e.g. fp16 for SVD-XT.")
    stage.add_argument("--set", **STORE_SET)
    stage.add_argument("--verbose", action="store_true", help="Full tracebacks.")
