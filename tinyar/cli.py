"""The command line: python -m tinyar COMMAND ... (see --help)."""
from __future__ import annotations

import argparse
import sys


def cmd_gradcheck(args):
    from tinyar.checks import run_all
    rows = run_all(include_models=not args.ops_only)
    width = max(len(r[0]) for r in rows)
    swidth = max(len(r[1]) for r in rows)
    print(f"{'op':<{width}}  {'shapes':<{swidth}}  {'max abs err':>11}  {'max rel err':>11}  result")
    for name, shapes, abs_err, rel_err, passed, message in rows:
        print(f"{name:<{width}}  {shapes:<{swidth}}  {abs_err:11.2e}  {rel_err:11.2e}  "
              f"{'pass' if passed else 'FAIL  ' + message}")
    failed = sum(not r[4] for r in rows)
    print(f"{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tinyar",
                                     description="Autoregressive generative models on a small NumPy autograd.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("gradcheck", help="check every op's and every model's gradients against finite differences",
                       description="Gradcheck every registered op, composite and model loss in float64; "
                                   "prints a table and exits non-zero if any fails.")
    p.add_argument("--ops-only", action="store_true", help="skip the models' losses")
    p.set_defaults(run=cmd_gradcheck)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
