"""Summarise a ``py-spy record --format raw`` profile (``bench_bridge.py --profile DIR``).

    python -m tests.perf.profile_summary /tmp/prof/zero-p1-bridge.txt [--top 30] [--group]

Each line of the file is a stack (``frame;frame;…``, outermost first) and its sample count;
py-spy leaves idle samples out, so the total is the process's busy time. Prints the functions
with the most samples on top of the stack (self) and anywhere in it (inclusive), as shares of
the busy samples; ``--group`` adds the same by area (the bridge's modules, httpx, aiohttp,
aiokafka, asyncio, pydantic, …), judged by the innermost frame of the stack.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
AREAS = (
    ("bridge/", "bridge"),
    ("httpx_aiohttp", "httpx-aiohttp"),
    ("httpx/", "httpx"),
    ("httpcore", "httpcore"),
    ("aiohttp/", "aiohttp"),
    ("yarl", "yarl"),
    ("multidict", "multidict"),
    ("aiokafka/", "aiokafka"),
    ("kafka/", "aiokafka"),
    ("pydantic", "pydantic"),
    ("prometheus_client", "prometheus"),
    ("uvicorn", "uvicorn"),
    ("starlette", "starlette"),
    ("h11", "h11"),
    ("asyncio/", "asyncio"),
    ("logging/", "logging"),
)


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def short(frame: str) -> str:
    match = FRAME.match(frame)
    if match is None:
        return frame
    file = match["file"]
    for marker in ("site-packages/", "lib/python3", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{match['func']} ({file})"


def area(frame: str) -> str:
    for marker, name in AREAS:
        if marker in frame:
            return name
    return "other"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("profile", type=Path, nargs="+")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--group", action="store_true")
    ns = p.parse_args(argv)
    for path in ns.profile:
        stacks = parse(path)
        total = sum(n for _, n in stacks) or 1
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        areas: Counter[str] = Counter()
        for frames, n in stacks:
            own[short(frames[-1])] += n
            for name in {short(f) for f in frames}:
                inclusive[name] += n
            areas[area(frames[-1])] += n
        print(f"== {path}: {total} busy samples")
        print("-- self")
        for name, n in own.most_common(ns.top):
            print(f"{n / total:6.1%}  {name}")
        print("-- inclusive")
        for name, n in inclusive.most_common(ns.top):
            print(f"{n / total:6.1%}  {name}")
        if ns.group:
            print("-- by area of the innermost frame")
            for name, n in areas.most_common():
                print(f"{n / total:6.1%}  {name}")


if __name__ == "__main__":
    main()
