"""The predict micro-batcher: shared forward passes give each request exactly its own outputs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import torch

from models.network import build_network
from models.spec import NetworkSpec
from service.learning.served import ServedModel
from service.runtime.microbatch import MicroBatcher

T = TypeVar("T")
SPEC = NetworkSpec(task="classification", inputs=6, outputs=3, hidden=[32, 32])


def served(seed: int, version: int = 1, spec: NetworkSpec = SPEC) -> ServedModel:
    return ServedModel(version, build_network(spec, seed=seed))


def requests(count: int, *, rows: int = 1, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, SPEC.inputs, generator=generator) for _ in range(count)]


def run(make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make()

    return asyncio.run(main())


class SlowServed(ServedModel):
    """A served model whose forward pass holds until released, so requests pile up behind it."""

    def __init__(self, version: int, seed: int) -> None:
        super().__init__(version, build_network(SPEC, seed=seed))
        self.release = threading.Event()
        self.started = threading.Event()

    def outputs(self, inputs: torch.Tensor) -> torch.Tensor:
        self.started.set()
        self.release.wait(timeout=10)
        return super().outputs(inputs)


class BrokenServed(ServedModel):
    def outputs(self, inputs: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("the forward pass failed")


async def while_running(model: SlowServed, coroutines: list[Awaitable[T]]) -> list[T]:
    """Starts the first coroutine, waits until its forward runs, queues the rest, releases."""
    first = asyncio.ensure_future(coroutines[0])
    await asyncio.to_thread(model.started.wait, 10)
    rest = [asyncio.ensure_future(c) for c in coroutines[1:]]
    await asyncio.sleep(0.01)  # every queued request reaches its lane
    model.release.set()
    return await asyncio.gather(first, *rest)


@pytest.mark.parametrize("adaptive", [True, False])
def test_concurrent_requests_get_the_outputs_of_a_solo_forward(adaptive: bool) -> None:
    model = served(seed=1)
    inputs = requests(40, rows=3)
    batcher = MicroBatcher(max_batch=64, max_wait_s=0.005, adaptive=adaptive)

    outputs = run(lambda: asyncio.gather(*(batcher.submit("m", model, x) for x in inputs)))

    for x, out in zip(inputs, outputs, strict=True):
        assert torch.allclose(out, model.outputs(x), rtol=1e-5, atol=1e-6)
    assert batcher.stats.largest > 3


def test_a_batch_of_identical_composition_gives_identical_outputs() -> None:
    model = SlowServed(1, seed=2)
    inputs = requests(9, rows=2)
    batcher = MicroBatcher(max_batch=64)

    outputs = run(lambda: while_running(model, [batcher.submit("m", model, x) for x in inputs]))

    assert batcher.stats.batches == 2  # the first alone, then the other eight together
    together = model.outputs(torch.cat(inputs[1:]))
    assert torch.equal(torch.cat(outputs[1:]), together)
    assert torch.equal(outputs[0], model.outputs(inputs[0]))


def test_requests_pile_up_behind_a_running_forward_into_one_batch() -> None:
    model = SlowServed(1, seed=3)
    sizes: list[tuple[object, int, int]] = []
    batcher = MicroBatcher(max_batch=64, on_batch=lambda *batch: sizes.append(batch))

    run(lambda: while_running(model, [batcher.submit("m", model, x) for x in requests(33)]))

    assert sizes == [("m", 1, 1), ("m", 32, 32)]
    assert batcher.stats.mean_rows == 16.5


def test_a_batch_never_exceeds_max_batch_rows() -> None:
    model = SlowServed(1, seed=3)
    batcher = MicroBatcher(max_batch=8)

    run(lambda: while_running(model, [batcher.submit("m", model, x) for x in requests(21)]))

    assert batcher.stats.largest == 8
    assert batcher.stats.rows == 21


def test_requests_for_different_keys_never_share_a_forward() -> None:
    first, second = served(seed=4, version=1), served(seed=5, version=2)
    inputs = requests(30)
    batcher = MicroBatcher(max_batch=64)
    keys: list[object] = []
    batcher.on_batch = lambda key, rows, count: keys.append(key)

    async def mixed() -> list[torch.Tensor]:
        calls = [
            batcher.submit(("m", i % 2 + 1), first if i % 2 == 0 else second, x)
            for i, x in enumerate(inputs)
        ]
        return await asyncio.gather(*calls)

    outputs = run(mixed)

    for i, (x, out) in enumerate(zip(inputs, outputs, strict=True)):
        model = first if i % 2 == 0 else second
        assert torch.allclose(out, model.outputs(x), rtol=1e-5, atol=1e-6)
    assert set(keys) == {("m", 1), ("m", 2)}
    assert batcher.stats.rows == 30


def test_one_key_with_two_served_objects_keeps_them_apart() -> None:
    old, new = served(seed=6), served(seed=7)
    x = requests(1)[0]
    batcher = MicroBatcher()

    outputs = run(lambda: asyncio.gather(batcher.submit("m", old, x), batcher.submit("m", new, x)))

    assert torch.allclose(outputs[0], old.outputs(x), rtol=1e-5, atol=1e-6)
    assert torch.allclose(outputs[1], new.outputs(x), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(outputs[0], outputs[1])


def test_an_error_in_the_forward_reaches_every_request_of_the_batch() -> None:
    model = BrokenServed(1, build_network(SPEC, seed=8))
    batcher = MicroBatcher()

    async def all_of_them() -> list[BaseException | torch.Tensor]:
        calls = [batcher.submit("m", model, x) for x in requests(12)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = run(all_of_them)

    assert all(isinstance(r, RuntimeError) for r in results)
    assert {str(r) for r in results} == {"the forward pass failed"}


def test_a_lone_request_on_an_idle_batcher_does_not_wait_for_company() -> None:
    model = served(seed=9)
    batcher = MicroBatcher(max_wait_s=5.0)

    async def timed() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await batcher.submit("m", model, requests(1)[0])
        return loop.time() - start

    assert run(timed) < 1.0


def test_a_fixed_window_holds_a_lone_request_for_max_wait() -> None:
    model = served(seed=9)
    batcher = MicroBatcher(max_wait_s=0.05, adaptive=False)

    async def timed() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await batcher.submit("m", model, requests(1)[0])
        return loop.time() - start

    assert run(timed) >= 0.045  # timers may fire a clock tick early


def test_a_full_batch_starts_a_second_forward_when_concurrency_allows() -> None:
    model = SlowServed(1, seed=10)
    batcher = MicroBatcher(max_batch=4, max_concurrent=2, max_wait_s=5.0)

    async def overlapping() -> int:
        first = asyncio.ensure_future(batcher.submit("m", model, requests(1)[0]))
        await asyncio.to_thread(model.started.wait, 10)
        more = [asyncio.ensure_future(batcher.submit("m", model, x)) for x in requests(4)]
        await asyncio.sleep(0.05)
        started = batcher.stats.batches  # the full batch left while the first still runs
        model.release.set()
        await asyncio.gather(first, *more)
        return started

    assert run(overlapping) == 2


def test_rows_of_the_wrong_width_are_refused_before_they_join_a_batch() -> None:
    batcher = MicroBatcher()

    with pytest.raises(ValueError, match="shape"):
        run(lambda: batcher.submit("m", served(seed=1), torch.zeros(2, SPEC.inputs + 1)))


def test_a_cancelled_request_leaves_the_others_their_answers() -> None:
    model = SlowServed(1, seed=11)
    batcher = MicroBatcher()
    inputs = requests(4)

    async def one_gives_up() -> list[torch.Tensor]:
        first = asyncio.ensure_future(batcher.submit("m", model, inputs[0]))
        await asyncio.to_thread(model.started.wait, 10)
        quitter = asyncio.ensure_future(batcher.submit("m", model, inputs[1]))
        stayers = [asyncio.ensure_future(batcher.submit("m", model, x)) for x in inputs[2:]]
        await asyncio.sleep(0.01)
        quitter.cancel()
        model.release.set()
        return await asyncio.gather(first, *stayers)

    outputs = run(one_gives_up)

    assert batcher.stats.rows == 3
    for x, out in zip([inputs[0], *inputs[2:]], outputs, strict=True):
        assert torch.allclose(out, model.outputs(x), rtol=1e-5, atol=1e-6)


def test_a_lone_request_cancelled_mid_forward_leaves_the_lane_working() -> None:
    model = SlowServed(1, seed=12)
    batcher = MicroBatcher()
    x = requests(1)[0]

    async def cancel_then_ask_again() -> torch.Tensor:
        lone = asyncio.ensure_future(batcher.submit("m", model, x))
        await asyncio.to_thread(model.started.wait, 10)
        lone.cancel()
        model.release.set()
        with pytest.raises(asyncio.CancelledError):
            await lone
        return await batcher.submit("m", model, x)

    assert torch.allclose(run(cancel_then_ask_again), model.outputs(x), rtol=1e-5, atol=1e-6)
