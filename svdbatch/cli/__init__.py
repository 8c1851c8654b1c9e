"""``svdbatch run|plan|tune|manifest|report|demo|spec|model stage``: every user error is one line naming what to fix.

Only the spec module is imported at start: torch, diffusers and Ray load inside the commands that need them, so
``--help``, ``spec``, ``manifest`` and ``report`` answer at once (tests/test_unit_cli.py guards it). The commands,
options and help texts are in parser.py; plan.py and tune.py run the commands of those names.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

from svdbatch.cli.parser import build_parser
from svdbatch.errors import JobError, UserError
from svdbatch.run import stopping
from svdbatch.spec.config import JobSpec, SpecError
from svdbatch.spec.load import load_spec
from svdbatch.spec.reference import reference

EXIT_USAGE = 2
EXIT_FAILED = 1
# Object-store clients log their own retries and tracebacks (gcsfs's "Could not determine bucket type", aiohttp's
# connection errors): the one line svdbatch prints names the store and the cause; --verbose shows theirs.
STORE_LOGGERS = ("gcsfs", "google", "aiohttp", "asyncio", "fsspec", "s3fs", "botocore", "aiobotocore", "adlfs", "azure")


def _checked_spec(spec_path: str, args: argparse.Namespace) -> JobSpec:
    """The job spec validated and its manifest found before torch or Ray load: a mistake answers in a moment."""
    from svdbatch import storage

    spec = storage.within(lambda: load_spec(spec_path, _overrides(args)))  # a spec URL on a store that does not answer
    from svdbatch.items.manifest import find_files  # pyarrow: not needed to answer a spec error

    storage.within(lambda: find_files(spec), spec.storage_options)
    return spec


def _run(spec_path: str, args: argparse.Namespace) -> int:
    take_over = getattr(args, "take_over", False)  # demo has no --take-over nor --lease-wait
    lease_wait = getattr(args, "lease_wait", None)
    if lease_wait is not None and lease_wait < 0:
        raise SpecError(f"--lease-wait {lease_wait:g}: must be 0 or more seconds")
    spec = _checked_spec(spec_path, args)
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
    spec = _checked_spec(args.spec_path, args)
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
    _checked_spec(args.spec_path, args)
    with stopping.handled():
        from svdbatch.cli.tune import tune

        show = {"verbose": args.verbose, "progress": not args.quiet, "cli": True}
        lines, page = tune(args.spec_path, args.set, args.tries, args.sample, args.dir, **show)
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
    args = build_parser().parse_args(argv)
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
            spec_path = prepare(Path(args.dir).resolve(), args.images)
            print(f"demo job spec: {spec_path}")
            return _run(str(spec_path), args)
        return _run(args.spec_path, args)
    except UserError as error:
        if args.verbose:
            traceback.print_exc()
        print(f"svdbatch: error: {error}", file=sys.stderr)
        return EXIT_USAGE if isinstance(error, SpecError) else EXIT_FAILED
    except stopping.Stopped as stop:
        print(stop.line(), file=sys.stderr, flush=True)
        return stop.exit_code
