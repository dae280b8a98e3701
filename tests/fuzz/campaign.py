"""`make fuzz`: a long differential-fuzzing campaign (tests/fuzz/check.py on random programs).

    python -m tests.fuzz.campaign [--programs 2000] [--batch 8] [--seed S] [--numba/--no-numba]

Programs are drawn by hypothesis in batches (one Numba build per batch). A batch with a
mismatch or a crash is shrunk by hypothesis (its other programs shrink to one statement, the
failing one to a minimal program), and the failing programs are printed (paste them into
tests/fuzz/test_fuzz_regressions.py); the campaign then goes on with the next seed
until it has run its budget. The summary lists programs run, passed, skipped by unsupported
function, mismatches, crashes, how many gradient checks had a finite-difference reference,
the wall time and the seed (rerun with --seed to reproduce). Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import tempfile
import time
import warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=8, help="programs per Numba build")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-statements", type=int, default=8)
    parser.add_argument("--no-numba", action="store_true", help="interpreter checks only")
    parser.add_argument("--max-failures", type=int, default=5,
                        help="stop after this many distinct shrunk failures")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    cache = os.environ.setdefault("CHAINJIT_CACHE_DIR", os.path.join(
        tempfile.gettempdir(), f"chainjit-fuzz-cache-{os.getuid()}"))
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(cache, "numba"))
    warnings.simplefilter("ignore")

    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    from tests.fuzz.check import check_batch
    from tests.fuzz.programs import programs

    stats: collections.Counter = collections.Counter()
    skips: collections.Counter = collections.Counter()
    failures: list = []
    start = time.perf_counter()
    run_seed = seed
    print(f"chainjit fuzz: {args.programs} programs, batches of {args.batch}, seed {seed}",
          flush=True)
    while stats["run"] < args.programs:
        state = {"failed": False, "last": None}
        batches = -(-(args.programs - stats["run"]) // args.batch)

        @hypothesis_seed(run_seed)
        @settings(max_examples=batches, database=None, deadline=None, derandomize=False,
                  phases=[Phase.generate, Phase.shrink], print_blob=False,
                  suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
        @given(st.lists(programs(max_statements=args.max_statements), min_size=args.batch,
                        max_size=args.batch))
        def campaign(batch):
            outcomes = check_batch(batch, numba=not args.no_numba)
            bad = [o for o in outcomes if o.status in ("mismatch", "crash")]
            if not state["failed"]:
                for o in outcomes:
                    stats["run"] += 1
                    stats[o.status] += 1
                    stats["fd reference"] += o.status == "passed" and o.smooth
                    if o.status == "skipped":
                        skips[o.reason] += 1
                if stats["run"] % (20 * args.batch) < len(batch):
                    _progress(stats, start)
            if bad:
                state["failed"] = True
                state["last"] = bad
                raise AssertionError(bad[0].reason)

        try:
            campaign()
        except AssertionError:
            for outcome in state["last"] or []:
                if any(str(o) == str(outcome) for _, o in failures):
                    continue
                failures.append((run_seed, outcome))
                print(f"\nFAILURE (seed {run_seed}), shrunk:\n{outcome}\n", flush=True)
        if not state["failed"] or len(failures) >= args.max_failures:
            break
        run_seed += 1
    _summary(stats, skips, failures, seed, time.perf_counter() - start)
    return 1 if failures else 0


def _progress(stats, start) -> None:
    print(f"  {stats['run']} programs, {stats['passed']} passed, {stats['skipped']} skipped, "
          f"{stats['mismatch']} mismatches, {stats['crash']} crashes "
          f"({time.perf_counter() - start:.0f} s)", flush=True)


def _summary(stats, skips, failures, seed: int, wall: float) -> None:
    shrunk = collections.Counter(o.status for _, o in failures)
    print("\n== chainjit fuzz summary ==")
    print(f"seed:              {seed}")
    print(f"programs run:      {stats['run']}")
    print(f"passed:            {stats['passed']} ({stats['fd reference']} with a "
          "finite-difference reference; the rest were not smooth enough at their inputs)")
    print(f"skipped:           {stats['skipped']}")
    for reason, count in skips.most_common():
        print(f"  {count:6d}  {reason}")
    print(f"mismatches:        {stats['mismatch']} ({shrunk['mismatch']} distinct, shrunk above)")
    print(f"crashes:           {stats['crash']} ({shrunk['crash']} distinct, shrunk above)")
    print(f"wall time:         {wall:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
