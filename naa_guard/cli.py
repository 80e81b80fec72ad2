"""The ``naa-guard`` command: audit a policy, write a starting policy, run the demo, sweep an attack's parameters, print the schema.

Exit codes: 0 all gates pass, 1 a gate fails, 2 the policy, the audit or an output is invalid,
130 interrupted (Ctrl-C). Errors are one message on stderr, never a traceback, and a verdict is
printed only after every output file was written: a report that cannot be written is exit 2.
The policy and its paths are checked before the model libraries (torch, diffusers,
scikit-learn) are imported, so such mistakes are reported at once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from naa_guard.errors import NaaGuardError, OutputError
from naa_guard.reports.write import check_output
from naa_guard.verdict.gatelist import match_gates

if TYPE_CHECKING:
    from naa_guard.policy import Policy
    from naa_guard.scoring.runner import ChunkRunner

EXIT_PASS, EXIT_FAIL, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


def _write_outputs(result: object, json_path: Path | None, report_dir: Path | None, scores_path: Path | None = None) -> list[str]:
    """Return the lines naming the files written; OutputError when one cannot be written."""
    from naa_guard.reports.scores_csv import write_scores
    from naa_guard.reports.write import write_reports

    lines = []
    try:
        if report_dir is not None:
            lines += [f"report: {path}" for path in write_reports(result, report_dir)]  # type: ignore[arg-type]
        if scores_path is not None:
            lines.append(f"scores: {write_scores(result, scores_path)}")  # type: ignore[arg-type]
        if json_path is not None:  # last: the file a CI job reads exists only when every output was written
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")  # type: ignore[attr-defined]
            lines.append(f"JSON report: {json_path}")
    except OSError as exc:
        raise OutputError(f"cannot write the report: {exc.strerror or exc} ({exc.filename or json_path or report_dir}). Fix: choose a writable path; no verdict is given without its report.") from None
    return lines


def _cmd_audit(args: argparse.Namespace) -> int:
    from naa_guard.scoring import distributed

    if args.cache:  # a file there would cost a warning per chunk and summary: one error line instead, before anything runs
        from naa_guard.scoring.chunks import check_store_root

        check_store_root(Path(args.cache), "--cache")

    if args.nproc > 1 and not distributed.launched_by_torchrun():
        return _launch_audit(args)
    if not distributed.launched_by_torchrun():
        return _audit_here(args, None)
    group = distributed.join()
    try:
        if group.rank == 0:
            code = distributed.lead(group, lambda runner: _audit_here(args, runner, group.local_rank))
        else:
            code = distributed.serve(group)
    finally:
        distributed.leave()
    return EXIT_PASS if args.result_file else code  # launched by --nproc: the code travels in the result file


def _launch_audit(args: argparse.Namespace) -> int:
    """Run this audit on ``--nproc`` local ranks under torchrun; return rank 0's exit code.

    The audit is first run here up to its first chunk job, as rank 0 would run it: every check
    that needs no model refuses here, before any rank starts; with ``--cache`` an audit whose
    chunks need no model is re-gated here and no torchrun is started (:mod:`naa_guard.scoring.storedfirst`).
    """
    from naa_guard.launcher import launch, launch_warnings
    from naa_guard.policy import load_policy

    policy = load_policy(args.policy)
    code = _regate_here(args, policy)
    if code is not None:
        return code
    for warning in launch_warnings(args.nproc, args.device or policy.runtime.device):
        print(f"naa-guard: warning: {warning}", file=sys.stderr)
    outcome, _ = launch(args.nproc, _audit_arguments(args))
    return outcome.code


def _regate_here(args: argparse.Namespace, policy: Policy) -> int | None:
    """Return the exit code of this audit run here without the model (a refusal, or a re-gate from stored scores), or None when the ranks must run it."""
    from naa_guard.scoring.modelguard import ModelNeeded, model_stays_unloaded
    from naa_guard.scoring.storedfirst import StoredOnlyRunner, launcher_runner

    runner = launcher_runner(policy, Path(args.cache) if args.cache else None)
    try:
        with model_stays_unloaded():
            code = _audit_here(args, runner)
    except ModelNeeded:  # nothing was written or printed yet: the ranks run the whole audit
        return None
    if not args.quiet and code != EXIT_INVALID and isinstance(runner, StoredOnlyRunner):
        print(f"naa-guard: every score was stored in {args.cache}: re-gated in this process, no torchrun started for --nproc {args.nproc}", file=sys.stderr)
    return code


def _audit_arguments(args: argparse.Namespace) -> list[str]:
    """Return the command-line arguments that repeat this audit's options (for the ranks torchrun starts)."""
    options = {
        "--device": args.device, "--batch-size": args.batch_size, "--limit": args.limit, "--json": args.json, "--scores": args.scores,
        "--cache": args.cache, "--chunk-size": args.chunk_size, "--baseline": args.baseline,
    }  # fmt: skip
    forwarded = ["audit", str(Path(args.policy).resolve())]
    for flag, value in options.items():
        if value is not None:
            forwarded += [flag, str(Path(value).resolve()) if flag in ("--json", "--scores", "--cache", "--baseline") else str(value)]
    return forwarded + (["--quiet"] if args.quiet else []) + (["--no-reports"] if args.no_reports else []) + (["--mlflow"] if getattr(args, "mlflow", False) else [])


def _audit_here(args: argparse.Namespace, runner: ChunkRunner | None, local_rank: int = 0) -> int:
    """Run the audit in this process (as rank 0 of a group when ``runner`` is given); return the exit code.

    Outputs are checked before any scoring and written before the verdict is printed: a report
    that cannot be written is exit 2, never a PASS followed by a traceback.
    """
    from naa_guard.launcher import Outcome, write_outcome
    from naa_guard.policy import load_policy, preflight

    try:
        policy = load_policy(args.policy)
        json_path = Path(args.json) if args.json else None
        scores_path = Path(args.scores) if args.scores else None
        report_dir = policy.report.dir if not args.no_reports else None
        from naa_guard.verdict.baseline import baseline_path
        from naa_guard.verdict.resolvable import check_policy_counts

        outputs: list[Callable[[], object]] = [partial(check_output, path, folder=False, where=where) for path, where in ((json_path, "--json"), (scores_path, "--scores")) if path is not None]
        outputs += [partial(check_output, report_dir, folder=True, where=f"{policy.source}: report.dir")] if report_dir is not None else []
        outputs.append(partial(baseline_path, policy, Path(args.baseline) if args.baseline else None, (json_path,)))  # never the file this run writes
        if getattr(args, "mlflow", False):
            from naa_guard.reports.mlflowlog import require_mlflow

            outputs.append(require_mlflow)
        # outputs, baseline, missing folders and configs, unlistable sets, unresolvable gates: all at once, before torch, diffusers and scikit-learn load
        preflight(policy, args.limit if args.limit is not None else policy.data.limit, counts=check_policy_counts, also=outputs)

        from naa_guard.audit import audit
        from naa_guard.scoring.chunks import ChunkStore
        from naa_guard.scoring.distributed import rank_device
        from naa_guard.scoring.storedfirst import rank0_device

        requested = args.device or policy.runtime.device
        device = (rank0_device(requested) if local_rank == 0 else rank_device(requested, local_rank)) if runner is not None else args.device
        store = ChunkStore(Path(args.cache)) if args.cache else None
        baseline = Path(args.baseline) if args.baseline else None
        result = audit(
            policy, device=device, batch_size=args.batch_size, limit=args.limit, progress=not args.quiet, chunk_store=store,
            runner=runner, baseline=baseline, checked=True, **({"chunk_samples": args.chunk_size} if args.chunk_size else {}),
        )  # fmt: skip
        result.gates = match_gates(policy, result.gates)  # the table and the exit code render the policy's gated rows, no other
        written = _write_outputs(result, json_path, report_dir, scores_path)
        if getattr(args, "mlflow", False):  # from the report written: its checked gated rows, before the verdict is printed
            from naa_guard.reports.mlflowlog import log_result

            written.append(f"MLflow run: {log_result(result, report_dir)}")
    except NaaGuardError as exc:
        print(f"naa-guard: {type(exc).__name__}: {exc}", file=sys.stderr)
        if args.result_file:
            write_outcome(Path(args.result_file), Outcome(EXIT_INVALID, error=exc))
        return EXIT_INVALID
    from naa_guard.reports.text import format_table

    print(format_table(result))
    for line in written:
        print(line)
    code = EXIT_INVALID if result.errored else EXIT_PASS if result.passed else EXIT_FAIL
    if args.result_file:
        write_outcome(Path(args.result_file), Outcome(code, result=result))
    return code


def _cmd_init(args: argparse.Namespace) -> int:
    from naa_guard.init_policy import write_initial_policy
    from naa_guard.policy import load_policy

    output = Path(args.output) if args.output else Path(f"{Path(args.model).resolve().name or 'model'}.naa.yaml")
    written = write_initial_policy(
        Path(args.model), Path(args.members), Path(args.nonmembers), output, force=args.force,
        config=Path(args.config) if args.config else None, splits=(args.members_split, args.nonmembers_split),
        lora=Path(args.lora) if args.lora else None, reference=Path(args.reference) if args.reference else None,
    )  # fmt: skip
    load_policy(written)  # what init writes must validate; a failure here is a bug, reported as one
    print(written.read_text(encoding="utf-8"))
    print(f"wrote {written}; run it with: naa-guard audit {written}")
    return EXIT_PASS


def _cmd_demo(args: argparse.Namespace) -> int:
    from naa_guard.audit import audit
    from naa_guard.demo import build_demo
    from naa_guard.policy import load_policy
    from naa_guard.reports.text import format_table
    from naa_guard.reports.write import write_reports

    started = time.perf_counter()
    print(f"naa-guard demo: training a small DDPM on scikit-learn's digits in {args.out} ...", flush=True)
    artifacts = build_demo(Path(args.out), progress=not args.quiet)
    trained = time.perf_counter() - started
    print(f"trained and saved in {trained:.0f}s; auditing ...", flush=True)
    policy = load_policy(artifacts.policy)
    result = audit(policy, progress=not args.quiet)
    print(format_table(result))
    written = write_reports(result, artifacts.root / "report")
    print()
    print(f"model:       {artifacts.model}")
    print(f"members:     {artifacts.members} ({result.n_members} digits the model was trained on)")
    print(f"non-members: {artifacts.nonmembers} ({result.n_nonmembers} held-out digits)")
    print(f"policy:      {artifacts.policy}")
    print(f"reports:     {', '.join(str(p) for p in written)}")
    print(f"total time:  {time.perf_counter() - started:.0f}s")
    print("The demo model memorises its training digits, so its gates are expected to FAIL.")
    print(f"Re-run the audit with: naa-guard audit {artifacts.policy}")
    return EXIT_PASS


def _cmd_sweep(args: argparse.Namespace) -> int:
    from naa_guard.policy import load_policy, preflight
    from naa_guard.sweep import format_sweep, parse_params, sweep, write_sweep

    policy = load_policy(args.policy)
    check_output(Path(args.out), folder=True, where="--out")
    preflight(policy)
    attack = args.attack or next(iter(policy.attacks))
    result = sweep(policy, attack, parse_params(args.param), device=args.device, batch_size=args.batch_size, limit=args.limit, progress=not args.quiet)
    try:
        written = write_sweep(result, Path(args.out))
    except OSError as exc:
        raise OutputError(f"cannot write the sweep to {args.out}: {exc.strerror or exc} ({exc.filename}). Fix: choose a writable --out folder.") from None
    print(format_sweep(result))
    for path in written:
        print(f"wrote {path}")
    return EXIT_PASS


def _cmd_card(args: argparse.Namespace) -> int:
    from naa_guard.reports.card import write_card

    print(f"wrote the Privacy audit section of {args.report} into {write_card(Path(args.report), Path(args.card))}")
    return EXIT_PASS


def _cmd_schema(args: argparse.Namespace) -> int:
    from naa_guard.policy import policy_schema

    print(json.dumps(policy_schema(), indent=2))
    return EXIT_PASS


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``naa-guard`` command."""
    parser = argparse.ArgumentParser(prog="naa-guard", description="Membership-inference privacy gates for diffusion models.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("audit", help="audit a policy file; exit 1 when a gate fails")
    run.add_argument("policy", help="path to a policy YAML file")
    run.add_argument("--device", help="override runtime.device (auto, cpu, cuda, cuda:N, mps)")
    run.add_argument("--batch-size", type=int, help="override runtime.batch_size")
    run.add_argument("--limit", type=int, help="score a seeded subsample of N per side")
    run.add_argument("--json", help="write the JSON report to this path")
    run.add_argument("--baseline", help="a previous report.json: show the change and gate it with thresholds.max_increase (overrides the policy's baseline)")
    run.add_argument("--scores", metavar="PATH", help="write every sample's score as CSV (attack,role,index,source,score)")
    run.add_argument("--cache", metavar="DIR", help="keep scores under DIR chunk by chunk: a killed run resumes, an unchanged model re-gates without loading")
    run.add_argument("--chunk-size", type=int, metavar="N", help="images decoded, saved and shared out at a time, rounded to whole batches (default 256)")
    run.add_argument("--nproc", type=int, default=1, metavar="N", help="score on N local processes under torchrun (one per GPU, or CPU processes)")
    run.add_argument("--mlflow", action="store_true", help="log params, gated metrics, the verdict and the reports into the active MLflow run, or a new one under MLFLOW_TRACKING_URI")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--no-reports", action="store_true", help=argparse.SUPPRESS)  # the pytest plugin writes its own
    run.add_argument("--result-file", help=argparse.SUPPRESS)  # rank 0's outcome, for the process that launched torchrun
    run.set_defaults(handler=_cmd_audit)

    init = commands.add_parser("init", help="inspect a model folder and two sample sets and write a commented policy")
    init.add_argument("model", help="diffusers model folder, a cached Hub id (org/name), or a single-file checkpoint (with --config)")
    init.add_argument("members", help="training images: folder, .npz/.npy, .csv/.jsonl manifest or Hugging Face dataset (.parquet, save_to_disk folder)")
    init.add_argument("nonmembers", help="held-out images from the same distribution, same forms")
    init.add_argument("-o", "--output", help="policy file to write (default: ./<model folder name>.naa.yaml)")
    init.add_argument("--force", action="store_true", help="overwrite the output file if it exists")
    init.add_argument("--config", help="with a single-file checkpoint as MODEL: a diffusers folder of its architecture")
    init.add_argument("--members-split", help="the members' split of a Hugging Face dataset (e.g. train)")
    init.add_argument("--nonmembers-split", help="the non-members' split of a Hugging Face dataset (e.g. test)")
    init.add_argument("--lora", help="a LoRA on MODEL (the base pipeline): written as model.lora, with reference: base")
    init.add_argument("--reference", help="the base MODEL was fine-tuned from: written as model.reference (calibrated attacks)")
    init.set_defaults(handler=_cmd_init)

    demo = commands.add_parser("demo", help="train a small leaky model on bundled digits and audit it")
    demo.add_argument("--out", default="naa-guard-demo", help="output folder (default: ./naa-guard-demo)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(handler=_cmd_demo)

    sweeps = commands.add_parser("sweep", help="score one attack under every combination of parameter values (no gating)")
    sweeps.add_argument("policy", help="path to a policy YAML file (model, data and the base attack setting)")
    sweeps.add_argument("--param", action="append", required=True, metavar="NAME=V1,V2,...", help="a parameter and its values; repeat for a grid")
    sweeps.add_argument("--attack", help="the attack to sweep (default: the first listed in the policy)")
    sweeps.add_argument("--out", default="naa-sweep", help="folder for the CSV and the plot (default: ./naa-sweep)")
    sweeps.add_argument("--device", help="override runtime.device (auto, cpu, cuda, cuda:N, mps)")
    sweeps.add_argument("--batch-size", type=int, help="override runtime.batch_size")
    sweeps.add_argument("--limit", type=int, help="score a seeded subsample of N per side")
    sweeps.add_argument("--quiet", action="store_true", help="no progress bar")
    sweeps.set_defaults(handler=_cmd_sweep)

    card = commands.add_parser("card", help="write a report.json's Privacy audit section and metadata into a model card (re-running replaces it)")
    card.add_argument("report", help="the report.json an audit wrote")
    card.add_argument("--card", default="README.md", help="the model card to write into (default: ./README.md; created when missing)")
    card.set_defaults(handler=_cmd_card)

    schema = commands.add_parser("schema", help="print the JSON schema of policy files")
    schema.set_defaults(handler=_cmd_schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    args = build_parser().parse_args(argv)
    for name in ("batch_size", "limit", "nproc", "chunk_size"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            print(f"naa-guard: error: --{name.replace('_', '-')} must be at least 1 (got {value}).", file=sys.stderr)
            return EXIT_INVALID
    try:
        return args.handler(args)
    except NaaGuardError as exc:
        print(f"naa-guard: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("naa-guard: interrupted; no verdict.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # a file that vanished or a disk that filled mid-run: say which, no traceback
        print(f"naa-guard: error: {exc.strerror or exc} ({exc.filename or 'no file named'}); no verdict.", file=sys.stderr)
        return EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
