"""The `greenlab` command: the TUI by default, or a headless grid, a fetch, the model list, a capacity scan,
`greenlab report` (a subcommand with its own options, in greenlab.report_cli) and `greenlab check`
(greenlab.check_cli).

Every error that is the user's to fix prints one line on stderr and exits 2, with nothing written.
"""

from __future__ import annotations

import argparse
import os
import sys

from greenlab import __version__
from greenlab.core.errors import GreenLabError
from greenlab.core.text import escape_controls


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="greenlab",
        description="Measure the electricity of fine-tuning, with and without compression.",
        epilog="greenlab report --help: compare stored runs (verdicts, tables, JSON, CSV, plots). "
        "greenlab check: look for damage in a run store.",
    )
    parser.add_argument("--headless", metavar="EXPERIMENTS.toml", help="run the grid of a file with no UI")
    parser.add_argument("--db", metavar="PATH", help="run store (default: $GREENLAB_DB or data/runs.db)")
    parser.add_argument("--force", action="store_true", help="rerun runs already completed with identical settings")
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="with --headless: exit 2 at once if another grid is measuring on this host",
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="with --headless: run the grid on Ray, each run a task on a node: ADDRESS local "
        "(a Ray instance on this machine, the default unless RAY_ADDRESS is set), auto "
        "(the cluster started here with `ray start`) or ray://host:port",
    )
    parser.add_argument(
        "--fetch", metavar="EXPERIMENTS.toml", help="download every dataset and weight file a grid needs, then exit"
    )
    parser.add_argument("--list-models", action="store_true", help="print the model zoo and exit")
    parser.add_argument("--capacity", metavar="MODEL", help="scan a model's steganographic capacity and exit")
    parser.add_argument("--dataset", default="digits", help="dataset for --capacity (default: digits)")
    parser.add_argument("--image-size", type=int, default=None, help="input size for --capacity")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size for --capacity")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1.0,
        help="accuracy drop allowed by --capacity, in percentage points (default 1)",
    )
    parser.add_argument("--device", default="auto", help="device for --capacity (auto, cpu, cuda:N)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --capacity")
    parser.add_argument(
        "--epochs",
        type=int,
        default=1,
        help="fine-tuning epochs before --capacity scans (capacity is a trained model's)",
    )
    parser.add_argument("--no-pretrained", action="store_true", help="random init for --capacity (offline)")
    parser.add_argument("--max-eval-batches", type=int, default=None, help="cap evaluation batches for --capacity")
    parser.add_argument("--theme", metavar="NAME", help="TUI theme (see themes/)")
    parser.add_argument(
        "--experiments", metavar="PATH", default="experiments.toml", help="experiments file the TUI offers to load"
    )
    parser.add_argument("--version", action="version", version=f"greenlab {__version__}")
    return parser


def _list_models() -> int:
    from greenlab.core.train.zoo import describe_models

    print(f"{'model':<18} {'params':>12} {'input':>6}  {'kind':<6} source")
    for row in describe_models():
        params = (
            f"{row['params'] / 1e6:.1f}M"
            if row["params"] and row["params"] >= 1e6
            else (f"{row['params']:,}" if row["params"] else "-")
        )
        print(f"{row['name']:<18} {params:>12} {row['input']:>6}  {row['modality']:<6} {row['source']}")
    print("\nparams: with the 1000-class ImageNet head; GreenLab replaces the head for the dataset's classes.")
    return 0


def _capacity(args: argparse.Namespace) -> int:
    from greenlab.core.train.capacity import scan_model_capacity

    result = scan_model_capacity(
        args.capacity,
        dataset=args.dataset,
        image_size=args.image_size,
        batch_size=args.batch_size,
        tolerance_pp=args.tolerance,
        device=args.device,
        seed=args.seed,
        pretrained=not args.no_pretrained,
        epochs=args.epochs,
        max_eval_batches=args.max_eval_batches,
        log=lambda m: print(m, file=sys.stderr),
    )
    print(f"\n{'bits overwritten':>16}  val accuracy")
    for bits, accuracy in result.curve:
        marker = "  <- capacity" if bits == result.capacity_bits else ""
        print(f"{bits:>16}  {accuracy:.2%}{marker}")
    print(
        f"\n{result.model} on {result.dataset}: capacity {result.capacity_bits} of 23 mantissa bits per "
        f"parameter (accuracy drop within {result.tolerance_pp:g} pp of {result.trained_accuracy:.2%}); "
        f"{result.capacity_bytes / 1e6:.2f} MB over {result.params:,} parameters; "
        f"{23 - result.capacity_bits} mantissa bits needed"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv) if argv[:1] not in (["report"], ["check"]) else None
    try:
        if args is None and argv[0] == "check":
            from greenlab.check_cli import run_check

            return run_check(argv[1:])
        if args is None:
            from greenlab.report_cli import run_report

            return run_report(argv[1:])
        if args.list_models:
            return _list_models()
        if args.capacity:
            return _capacity(args)
        if args.fetch:
            from greenlab.headless import run_fetch

            return run_fetch(args.fetch)
        if args.ray is not None and not args.headless:
            print("greenlab: --ray runs a grid file: greenlab --headless FILE --ray [ADDRESS]", file=sys.stderr)
            return 2
        if args.headless:
            from greenlab.headless import run_headless

            return run_headless(args.headless, db=args.db, force=args.force, wait=not args.no_wait, ray=args.ray)
        try:
            from greenlab.tui.app import run_app
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("greenlab.tui"):
                print(
                    "greenlab: the TUI is not available in this build; use greenlab --headless experiments.toml",
                    file=sys.stderr,
                )
                return 2
            raise
        return run_app(db=args.db, theme=args.theme, experiments=args.experiments)
    except GreenLabError as exc:
        # A message may quote a stored name or a file's key: shown, never obeyed by the terminal, one line.
        print(f"greenlab: {escape_controls(str(exc), keep='')}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("greenlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed: the runs are stored; silence the interpreter's flush error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
