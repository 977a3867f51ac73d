"""Before/after benchmark of two trees: the same `bench` command run on an old revision and on this checkout, in
interleaved rounds, timed by the process's CPU time (time.thread_time, one torch thread) so that other load on a
shared machine disturbs it less than wall-clock time. Prints each round and the median per (tree, path).

    python tools/ab_bench.py --old cbf324a --rounds 3
    python tools/ab_bench.py --old cbf324a -- --arch default --batch 64 --parts e2e --paths ref,fast --reps 5

The old revision is checked out with `git worktree add` into a temporary folder (removed at the end). Its bench
module is lddgan_core.bench (a thin entry point in both layouts).
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BENCH = ["--arch", "default", "--batch", "64", "--parts", "e2e", "--paths", "ref,fast", "--reps", "5"]
RUNNER = ("import sys, time; time.perf_counter = time.thread_time\n"
          "import lddgan_core.bench as b\n"
          "sys.argv = ['bench'] + sys.argv[1:]\n"
          "sys.exit(b.main())\n")
ROW = re.compile(r"^\| (\S+) \| (\d+) \| (\S+) \| (\S+) \| ([\d.]+) \| ([\d.]+) \|")


def run_tree(tree: str, bench_args: list[str]) -> dict[str, float]:
    """{"<part> <path>": median ms} of one bench run in `tree`, CPU-timed, one thread."""
    env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", RUNNER, *bench_args, "--threads", "1", "--no-memory"], cwd=tree,
                         env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode:
        raise SystemExit(f"bench failed in {tree}:\n{out.stderr[-2000:]}")
    return {f"{m[3]} {m[4]}": float(m[6]) for m in map(ROW.match, out.stdout.splitlines()) if m}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="git revision to compare against")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="after --: the bench arguments")
    a = p.parse_args(argv)
    bench_args = [x for x in a.bench_args if x != "--"] or DEFAULT_BENCH
    with tempfile.TemporaryDirectory() as tmp:
        old = os.path.join(tmp, "old")
        subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", "-f", old, a.old], check=True,
                       capture_output=True)
        try:
            res: dict[tuple[str, str], list[float]] = {}
            for r in range(a.rounds):
                for name, tree in (("old", old), ("new", REPO)):
                    for key, ms in run_tree(tree, bench_args).items():
                        res.setdefault((name, key), []).append(ms)
                        print(f"round {r + 1} {name:3s} {key:12s} {ms:9.1f} ms (CPU time, median of reps)",
                              flush=True)
        finally:
            subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", old], capture_output=True)
    print("\n| part path | old ms (median of rounds) | new ms | new / old |\n| --- | --- | --- | --- |")
    for key in sorted({k for _, k in res}):
        o, n = statistics.median(res[("old", key)]), statistics.median(res[("new", key)])
        print(f"| {key} | {o:.1f} | {n:.1f} | {n / o:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
