"""The cost of a race: N candidates learning from each batch, against N separate models.

    python -m bench.race [--candidates 4] [--runs 3] [--smoke]

Figure 1 (the service, a real server): the same batches go to one model racing N candidates
(one request per batch) and to N separate models of the same specs (N requests per batch, in
turn). The value is (time of the N separate models) / (time of the race): above 1 the race is
cheaper. The service trains a race's candidates in turn, so it saves the per-request work (the
parse, the log append, the holdout, the buffers), not the optimizer steps.

Figure 2 (in process, not the service): the vectorised step a race of same-shaped candidates
could take, one `torch.func.vmap` of `grad` over the stacked parameters plus one Adam step over
the stacked tensors, against N `nn.Module`s stepped in turn. It says what vectorising the
service's race would buy on this machine; the service does not take this path yet.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from bench import reference
from bench.common import SMALL, Options, Row, fit_bodies, median, model_body, options, report
from bench.servers import gradual
from bench.wire import Connection

# No halving while measuring (the budget is never reached); the rest: the service's defaults.
TRAINING: dict[str, object] = {"batch_size": 64, "eval_every": 4, "patience": 1_000_000}
LRS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064)


def _extend(parser: Any) -> None:
    parser.add_argument("--candidates", type=int, default=4, help="N (2..8)")


def race_body(candidates: int) -> dict[str, Any]:
    variations = [{"optimizer.lr": lr} for lr in LRS[:candidates]]
    search = {"variations": variations, "budget": 100_000, "survivors": candidates - 1}
    return model_body("race", SMALL, training=TRAINING) | {"search": search}


def alone_body(index: int) -> dict[str, Any]:
    body = model_body(f"alone{index}", SMALL, training=TRAINING)
    body["optimizer"] = dict(body["optimizer"]) | {"lr": LRS[index]}  # type: ignore[call-overload]
    return body


async def fit_seconds(port: int, names: list[str], bodies: list[bytes]) -> float:
    """Seconds to post every batch to every model in `names` (in turn), after one warm batch."""
    connection = await Connection.open(port)
    try:
        for name in names:
            await connection.request("POST", f"/v1/models/{name}/partial-fit", bodies[0])
        start = time.perf_counter()
        for body in bodies[1:]:
            for name in names:
                (await connection.request("POST", f"/v1/models/{name}/partial-fit", body)).ok()
        return time.perf_counter() - start
    finally:
        await connection.close()


async def service_ratios(port: int, candidates: int, runs: int, batches: int) -> list[float]:
    connection = await Connection.open(port)
    ratios = []
    try:
        for run in range(runs):
            await connection.post("/v1/models", race_body(candidates) | {"name": f"race{run}"})
            alone = [alone_body(i) | {"name": f"a{run}-{i}"} for i in range(candidates)]
            for body in alone:
                await connection.post("/v1/models", body)
            bodies = fit_bodies(batches + 1, 64, seed=run)
            raced = await fit_seconds(port, [f"race{run}"], bodies)
            separate = await fit_seconds(port, [str(b["name"]) for b in alone], bodies)
            ratios.append(separate / raced)
    finally:
        await connection.close()
    return ratios


def vectorised_ratio(candidates: int, steps: int) -> float:
    """(N modules stepped in turn) / (one vmapped step of the stacked modules)."""
    nets = [reference.mlp(SMALL, seed=i) for i in range(candidates)]
    x, y = torch.randn(256, 54), torch.randint(0, 7, (256,))
    loss = nn.CrossEntropyLoss()
    optimizers = [torch.optim.Adam(net.parameters(), lr=1e-3) for net in nets]

    def in_turn() -> None:
        for net, optimizer in zip(nets, optimizers, strict=True):
            optimizer.zero_grad(set_to_none=True)
            loss(net(x), y).backward()
            optimizer.step()

    params, buffers = stack_module_state(nets)  # type: ignore[arg-type]
    stacked = {k: v.detach().requires_grad_(False) for k, v in params.items()}
    base = copy.deepcopy(nets[0]).to("meta")

    def objective(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss(functional_call(base, (p, b), (x,)), y)

    step_grads = vmap(grad(objective))
    optimizer = torch.optim.Adam(list(stacked.values()), lr=1e-3)

    def vectorised() -> None:
        grads = step_grads(stacked, buffers)
        for name, tensor in stacked.items():
            tensor.grad = grads[name]
        optimizer.step()

    return _seconds(in_turn, steps) / _seconds(vectorised, steps)


def _seconds(step: Any, steps: int) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def measure(opts: Options) -> list[Row]:
    candidates = max(2, min(int(opts.args.candidates), len(LRS)))
    batches = 4 if opts.smoke else 40
    with gradual(opts, meanwhile=lambda: reference.warm_up(training=True)) as server:
        ratios = asyncio.run(service_ratios(server.port, candidates, opts.runs, batches))
    vectorised = [vectorised_ratio(candidates, 5 if opts.smoke else 50) for _ in range(opts.runs)]
    return [
        Row(
            f"race of {candidates} vs {candidates} models in turn (service)",
            f"1 request × {batches} batches", f"{candidates} requests × {batches} batches",
            median(ratios), "> 1 (the race is cheaper)",
        ),
        Row(
            f"vectorised step of {candidates} (torch.func) vs in turn (prototype)",
            "vmap(grad) + one Adam", f"{candidates} modules stepped in turn",
            median(vectorised), "> 1",
        ),
    ]  # fmt: skip


def main() -> None:
    opts = options(__doc__ or "", runs=3, extend=_extend)
    reference.one_thread()
    report(
        "Racing candidates on a stream (MLP 54→256→256→7, batches of 64, service defaults)",
        measure(opts),
        ["value: median time of the reference / time of the race; the service's candidates "
         "train in turn (figure 2 is what a vectorised path would give)"],
    )  # fmt: skip


if __name__ == "__main__":
    main()
