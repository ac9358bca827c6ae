import asyncio
import random

from bridge.kafka.ordering import KeyedRunner


async def test_order_is_kept_per_key_and_keys_overlap() -> None:
    runner = KeyedRunner()
    seen: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    running = 0
    peak = 0
    rng = random.Random(3)
    finished = asyncio.Event()
    total = 90
    count = 0

    def job(key: str, n: int, delay: float):  # type: ignore[no-untyped-def]
        async def run() -> None:
            nonlocal running, peak, count
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(delay)
            seen[key].append(n)
            running -= 1
            count += 1
            if count == total:
                finished.set()

        return run

    for n in range(30):
        for key in seen:
            runner.submit(key, job(key, n, rng.random() / 500))
    await asyncio.wait_for(finished.wait(), 10)
    assert all(values == list(range(30)) for values in seen.values())
    assert peak == 3  # one at a time per key, keys concurrently
    await asyncio.sleep(0)
    assert runner.active_keys == 0


async def test_cancel_selected_keys_only() -> None:
    runner = KeyedRunner()
    gate = asyncio.Event()
    done: list[str] = []

    def job(key: str):  # type: ignore[no-untyped-def]
        async def run() -> None:
            await gate.wait()
            done.append(key)

        return run

    runner.submit(("p0", b"k"), job("p0"))
    runner.submit(("p1", b"k"), job("p1"))
    await asyncio.sleep(0)
    await runner.cancel(lambda key: key[0] == "p0")  # type: ignore[index]
    gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert done == ["p1"]
    assert runner.active_keys == 0
