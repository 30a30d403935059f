"""``cgspn bench {op,block,model}``: benchmarks that print a table and write JSON."""

from __future__ import annotations

import argparse
import importlib
import importlib.util

SUITES = {
    "op": ("cgspn.bench.op", "the GSPN operator vs the copy roofline and the per-line PyTorch loop"),
    "block": ("cgspn.bench.block", "one C-GSPN block vs a FlashAttention (SDPA) ViT block, with the MLP ceiling"),
    "model": ("cgspn.bench.model", "whole-encoder throughput and peak memory vs the isomorphic ViT"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="suite", metavar="SUITE", required=True)
    for name, (module, help_text) in SUITES.items():
        if importlib.util.find_spec(module) is None:
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module)
        mod.configure(p)
        p.set_defaults(_suite_run=mod.run)


def run(args: argparse.Namespace) -> int:
    return int(args._suite_run(args) or 0)
