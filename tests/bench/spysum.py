"""Summarise a py-spy ``--format raw`` (collapsed stacks) file: the functions where the
time goes, self and inclusive, as a share of all samples.

    python tests/bench/spysum.py samples.txt [--top 25] [--match schedulerd]
"""

from __future__ import annotations

import argparse
import collections
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--match", default="", help="only frames containing this text (inclusive view)"
    )
    args = parser.parse_args()
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    with open(args.path) as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = stack.split(";")
            total += n
            threads[frames[0]] += n
            if (
                "idle" in frames[-1]
                or frames[-1].startswith("select")
                or "wait (threading" in frames[-1]
            ):
                pass
            own[frames[-1]] += n
            for f in set(frames[1:]):
                if args.match in f:
                    incl[f] += n
    print(f"{total} samples")
    print("-- by thread")
    for name, n in threads.most_common(8):
        print(f"{100 * n / total:6.1f}%  {name}")
    print("-- self")
    for name, n in own.most_common(args.top):
        print(f"{100 * n / total:6.1f}%  {name}")
    print("-- inclusive")
    for name, n in incl.most_common(args.top):
        print(f"{100 * n / total:6.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
