"""`python -m parity_tests [--device cpu|cuda] [--tf32] [--dtype ...] [--case ...] [--summary] [--markdown FILE]`:
the parity table for every standard case; exits non-zero on any failure."""

from __future__ import annotations

import argparse
import sys
import time

from vae_core.checks import PRECISIONS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parity_tests", description=__doc__)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: $TWINVAE_DEVICE or cpu)")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 for float32 matmuls/convs (GPU)")
    parser.add_argument("--dtype", choices=list(PRECISIONS), action="append",
                        help="repeatable; default float64 and float32")
    parser.add_argument("--steps", type=int, default=None, help="Adam steps per case (default 50)")
    parser.add_argument("--case", action="append", help="substring of a case name to run (repeatable)")
    parser.add_argument("--summary", action="store_true",
                        help="print only the largest error of each quantity over all cases")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)

    from parity_tests import harness

    device = harness.device_from_env(args.device)
    harness.set_tf32(args.tf32)
    cases = [c for c in harness.CASES if not args.case or any(s in c.name for s in args.case)]
    if not cases:
        parser.error(f"no case matches {args.case}; cases: {[c.name for c in harness.CASES]}")
    rows = []
    for case in cases:
        for dtype in args.dtype or ["float64", "float32"]:
            start = time.perf_counter()
            rows += harness.compare(case, dtype, device, steps=args.steps)
            print(f"  {case.name} {dtype}: {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)
    table = harness.format_summary(rows) if args.summary else harness.format_table(rows)
    print(f"device: {device}, TF32 {'on' if args.tf32 else 'off'}")
    print(table)
    failed = [r for r in rows if not r.ok]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
