"""The ``cgspn`` command: a thin dispatcher to the subcommands each package provides.

Each subcommand lives next to the code it drives and exposes ``configure(parser)`` and
``run(args) -> int``; it is imported only when chosen, so ``cgspn --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "distill": ("cgspn.distill.cli", "two-stage cross-operator distillation from an attention teacher (the main job)"),
    "eval": ("cgspn.eval.cli", "feature fidelity, linear probe / kNN / zero-shot, segmentation mIoU"),
    "encode": ("cgspn.eval.encode_cli", "encode one image at any resolution in a single pass"),
    "bench": ("cgspn.bench.cli", "benchmarks: op, block, model (prints a table, writes JSON)"),
}


class CLIError(Exception):
    """An error to report as one clear line (no traceback)."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="cgspn", description="C-GSPN: 2D line-scan vision encoders.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            mod = importlib.import_module(module)
            mod.configure(p)
            p.set_defaults(_run=mod.run)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except (CLIError, FileNotFoundError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"cgspn {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cgspn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
