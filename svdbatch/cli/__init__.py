"""``svdbatch run|plan|tune|manifest|report|demo|spec|model stage``: every user error is one line naming what to fix.

Only the spec module is imported at start: torch, diffusers and Ray load inside the commands that need them, so
``--help``, ``spec``, ``manifest`` and ``report`` answer at once (tests/test_unit_cli.py guards it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

from svdbatch import __version__
from svdbatch.cli.plan import DEFAULT_GPU, DEFAULT_GPUS
from svdbatch.errors import JobError, UserError
from svdbatch.run import stopping
from svdbatch.spec.config import JobSpec, SpecError
from svdbatch.spec.load import load_spec
from svdbatch.spec.reference import reference

EXIT_USAGE = 2
EXIT_FAILED = 1
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
# Object-store clients log their own retries and tracebacks (gcsfs's "Could not determine bucket type", aiohttp's
# connection errors): the one line svdbatch prints names the store and the cause; --verbose shows theirs.
STORE_LOGGERS = ("gcsfs", "google", "aiohttp", "asyncio", "fsspec", "s3fs", "botocore", "aiobotocore", "adlfs", "azure")
EXIT_CODES = """exit status:
  0    every item rendered or was already done
  1    some items failed (error rows in the table), or a fatal problem stopped the job
  2    bad command line or job spec
  130  interrupted (SIGINT, Ctrl-C)
  143  stopped (SIGTERM, e.g. ray job stop)"""


def _parser() -> argparse.ArgumentParser:
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
    run.add_argument("job", help=JOB_HELP)
    run.add_argument("--prune", action="store_true", help=PRUNE_HELP)
    run.add_argument("--take-over", action="store_true", help=TAKE_OVER_HELP)
    run.add_argument("--lease-wait", type=float, metavar="SECONDS", help=LEASE_WAIT_HELP)
    run.epilog, run.formatter_class = EXIT_CODES, argparse.RawDescriptionHelpFormatter
    demo = add("demo", "Build the tiny model and sample images, then run the real job on a local Ray cluster.")
    demo.add_argument("--dir", default="demo-output", help=DEMO_DIR_HELP)
    demo.add_argument("--images", type=int, default=6, help="How many sample images to generate.")
    plan = add("plan", "Check a job spec and its whole manifest, count the work and estimate GPU time; no GPU used.")
    plan.add_argument("job", help=JOB_HELP)
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
    tune.add_argument("job", help=JOB_HELP)
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


def _checked_spec(job: str, args: argparse.Namespace) -> JobSpec:
    """The job spec validated and its manifest found before torch or Ray load: a mistake answers in a moment."""
    from svdbatch import storage

    spec = storage.within(lambda: load_spec(job, _overrides(args)))  # a spec URL on a store that does not answer
    from svdbatch.items.manifest import find_files  # pyarrow: not needed to answer a spec error

    storage.within(lambda: find_files(spec), spec.storage_options)
    return spec


def _run(job: str, args: argparse.Namespace) -> int:
    take_over = getattr(args, "take_over", False)  # demo has no --take-over nor --lease-wait
    lease_wait = getattr(args, "lease_wait", None)
    if lease_wait is not None and lease_wait < 0:
        raise SpecError(f"--lease-wait {lease_wait:g}: must be 0 or more seconds")
    spec = _checked_spec(job, args)
    with stopping.handled():
        from svdbatch.ray.driver import run

        show = {"verbose": args.verbose, "progress": not args.quiet, "cli": True}
        summary = run(spec, **show, take_over=take_over, lease_wait_s=lease_wait)
    print(summary.line())
    print(f"videos:   {spec.output.url.rstrip('/')}/videos/")
    print(f"metadata: {spec.output.url.rstrip('/')}/metadata/")
    return 0 if summary.failed == 0 else EXIT_FAILED


def _plan(args: argparse.Namespace) -> int:
    from svdbatch.cli.plan import make_plan
    from svdbatch.estimate.gpu_time import GPU_TFLOPS

    if args.tflops is None and args.gpu is not None and args.gpu not in GPU_TFLOPS:
        raise SpecError(f"--gpu {args.gpu}: unknown GPU kind; known: {', '.join(GPU_TFLOPS)}; or give --tflops")
    if args.tflops is not None and args.tflops <= 0:
        raise SpecError(f"--tflops {args.tflops:g}: must be positive")
    if args.gpus is not None and args.gpus < 1:
        raise SpecError(f"--gpus {args.gpus}: must be at least 1")
    spec = _checked_spec(args.job, args)
    report = make_plan(
        spec,
        args.gpu,
        args.seconds_per_video,
        args.tflops,
        args.gpus,
        verbose=args.verbose,
        progress=not args.quiet,
        cli=True,
    )
    print("\n".join(report.lines()))
    return 0 if not report.problems else EXIT_FAILED


def _tune(args: argparse.Namespace) -> int:
    if args.sample < 1:
        raise SpecError(f"--sample {args.sample}: must be at least 1")
    if not args.tries:
        raise SpecError("tune: give at least one --try KEY=V1,V2 to compare with the job's settings")
    _checked_spec(args.job, args)
    with stopping.handled():
        from svdbatch.cli.tune import tune

        show = {"verbose": args.verbose, "progress": not args.quiet, "cli": True}
        lines, page = tune(args.job, args.set, args.tries, args.sample, args.dir, **show)
    print("\n".join(lines))
    print(f"page: {page}")
    return 0


def _overrides(args: argparse.Namespace) -> list[str]:
    """--set pairs, plus output.prune=true for --prune (demo has no --prune)."""
    return [*args.set, "output.prune=true"] if getattr(args, "prune", False) else args.set


def _manifest(args: argparse.Namespace) -> int:
    from svdbatch.items.scan import IMAGE_EXTENSIONS, build_manifest, parse_constants, read_params
    from svdbatch.spec.load import parse_overrides

    options = parse_overrides(args.set).get("storage_options", {})
    try:
        constants = parse_constants(args.column)
        params = read_params(args.params, options) if args.params else {}
        rows = build_manifest(args.source, args.output, constants, params, options)
    except (ValueError, OSError) as error:
        raise JobError(str(error)) from error
    if rows == 0:
        raise JobError(f"{args.source}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    print(f"manifest: {rows} images -> {args.output}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from svdbatch.report.page import write_report
    from svdbatch.spec.load import parse_overrides

    options = parse_overrides(args.set).get("storage_options", {})
    try:
        index = write_report(args.output, options)
    except (ValueError, OSError) as error:
        raise JobError(str(error)) from error
    print(f"report: {index}")
    return 0


def _model_stage(args: argparse.Namespace) -> int:
    from svdbatch.model.staging import STAGE_RECORD, stage
    from svdbatch.spec.load import parse_overrides

    options = parse_overrides(args.set).get("storage_options", {})
    try:
        done = stage(args.source, args.url, args.variant, options, say=lambda line: print(line, flush=True))
    except (ValueError, OSError) as error:
        raise JobError(f"model stage: {type(error).__name__}: {error}") from error
    size = done.record["bytes"] / 1e9
    print(
        f"staged {len(done.record['files'])} files ({size:.2f} GB) to {done.url}: {len(done.copied)} copied, "
        f"{len(done.skipped)} already there"
    )
    print(f"record: {done.url}/{STAGE_RECORD}")
    variant = f", model.variant: {args.variant}" if args.variant else ""
    print(f"use: model.source: {done.url}{variant}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command's exit status; a reader that closes the pipe early (`svdbatch spec | head`) ends it quietly."""
    try:
        code = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit fails no more
        return EXIT_FAILED
    return code


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "spec":
        print("\n".join(reference()))
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.verbose:
        for name in STORE_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)

    try:
        if args.command == "plan":
            return _plan(args)
        if args.command == "tune":
            return _tune(args)
        if args.command == "manifest":
            return _manifest(args)
        if args.command == "report":
            return _report(args)
        if args.command == "model":
            return _model_stage(args)
        if args.command == "demo":
            from svdbatch.demo import check_durable, prepare

            check_durable(Path(args.dir), Path.cwd())
            job = prepare(Path(args.dir).resolve(), args.images)
            print(f"demo job spec: {job}")
            return _run(str(job), args)
        return _run(args.job, args)
    except UserError as error:
        if args.verbose:
            traceback.print_exc()
        print(f"svdbatch: error: {error}", file=sys.stderr)
        return EXIT_USAGE if isinstance(error, SpecError) else EXIT_FAILED
    except stopping.Stopped as stop:
        print(stop.line(), file=sys.stderr, flush=True)
        return stop.exit_code
