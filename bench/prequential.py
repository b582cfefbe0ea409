"""Learning quality: prequential (test-then-train) accuracy of the service's defaults, over
HTTP, beside the online learners people reach for, on the same rows in the same order.

    python -m bench.prequential [--passes 5] [--chunk 128] [--npy] [--runs 3] [--smoke]
    python -m bench.prequential --only service --training steps_per_batch=1 --optimizer lr=0.001

Streams: scikit-learn's digits (1,797 rows, 64 features, 10 classes) and breast cancer (569
rows, 30 features, binary), and two data sets River ships in its wheel: ImageSegments (2,310
rows, 18 features, 7 classes) and TrumpApproval (1,001 rows, 6 features, one a date ordinal near
736,000; regression, scored by MAE), each repeated in `--passes` shuffled passes. Every learner
sees the stream in chunks of `--chunk` rows (one HTTP request each for the service): it predicts
a chunk with the model as it stands (for the service: the served version, `POST .../predict`),
then learns it (`POST .../partial-fit`). The service's model is created with only `task`,
`inputs` and `outputs`: every other field at its default. Beside it: River's `StandardScaler |
LogisticRegression` (one-vs-rest for digits), scikit-learn's `MLPClassifier(64).partial_fit` per
chunk, and a raw PyTorch loop (the same 64-unit MLP, Adam 1e-3, no scaling) at batch 1 and batch
32; on River's streams, River's usual learners (linear, k-nearest neighbours, Hoeffding adaptive
tree). Learning samples/s: rows ÷ seconds spent in the learn call (an HTTP round trip for the
service).

Churn: the service alone on digits, breast cancer and ImageSegments, `--churn-passes` (20)
clean shuffled passes each: rollbacks and stop → resume cycles per 1,000 rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson
import torch
from rich.console import Console
from rich.table import Table

from bench.common import Options, Row, median, options, report
from bench.learners import (
    Learner,
    RiverLogistic,
    Score,
    Service,
    SklearnMLP,
    Stream,
    TorchLoop,
    prequential,
    river_learners,
    stream,
)
from bench.servers import Server, gradual
from bench.wire import Connection

STREAMS = ("digits", "cancer", "segments", "trump")
CHURN_STREAMS = ("digits", "cancer", "segments")
SMOKE_ROWS = 400
Baseline = Callable[[Stream], Learner]
BASELINES: dict[str, Baseline] = {
    "river": RiverLogistic,
    "sklearn": SklearnMLP,
    "torch1": lambda data: TorchLoop(data, batch=1),
    "torch32": lambda data: TorchLoop(data, batch=32),
}


def extend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--passes", type=int, default=5, help="shuffled passes per stream")
    parser.add_argument("--chunk", type=int, default=128, help="rows per request (per chunk)")
    parser.add_argument(
        "--npy", action="store_true", help="partial-fit bodies as .npy instead of JSON"
    )
    parser.add_argument(
        "--only", action="append",
        help="service, a baseline (river, sklearn, torch1, torch32, river-knn, river-tree, "
        "river-ovr, river-linear) or churn (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--churn-passes", type=int, default=20, help="clean passes per stream, churn figure"
    )
    parser.add_argument("--stream", action="append", choices=STREAMS, help="(repeatable)")
    for section in ("training", "optimizer", "spec"):
        parser.add_argument(
            f"--{section}", action="append", default=[], metavar="KEY=JSON",
            help=f"override a `{section}` field of the service's model (repeatable)",
        )  # fmt: skip


def model_body(name: str, data: Stream, args: argparse.Namespace) -> dict[str, Any]:
    """Only task, inputs and outputs, unless a tuning run overrides a field."""
    outputs = 1 if data.task in ("binary", "regression") else data.classes
    body: dict[str, Any] = {
        "name": name,
        "spec": {"task": data.task, "inputs": data.features, "outputs": outputs},
    }
    for section in ("training", "optimizer", "spec"):
        fields = dict(item.split("=", 1) for item in getattr(args, section))
        if fields:
            body[section] = body.get(section, {}) | {k: orjson.loads(v) for k, v in fields.items()}
    return body


def streams(
    opts: Options, passes: int | None = None, names: tuple[str, ...] = STREAMS
) -> list[Stream]:
    passes = 1 if opts.smoke else passes or opts.args.passes
    names = tuple(n for n in names if n in (opts.args.stream or STREAMS))
    found = [stream(name, passes) for name in names]
    if opts.smoke:
        found = [
            Stream(s.name, s.x[:SMOKE_ROWS], s.y[:SMOKE_ROWS], s.classes, SMOKE_ROWS) for s in found
        ]
    return found


@dataclass(frozen=True)
class Churn:
    """What learning control did on a clean stream: nothing, ideally, once learned."""

    stream: str
    passes: int
    rounds: int
    rollbacks: int
    stops: int
    resumes: int  # stop → resume cycles (a drift on a clean stream is churn)

    def per_1000(self, count: int) -> float:
        return 1000.0 * count / max(self.rounds, 1)


@dataclass(frozen=True)
class Measured:
    scores: dict[str, list[Score]]  # per stream: the service first (when chosen), then baselines
    streamed: float | None  # digits learned per second as one NDJSON request (the service)
    churn: list[Churn]


def baselines(data: Stream) -> dict[str, Baseline]:
    if data.name in ("digits", "cancer"):
        return BASELINES
    return {name: lambda _, make=make: make() for name, make in river_learners(data).items()}


def measure(opts: Options) -> Measured:
    chosen = opts.args.only or ["service", "churn", *BASELINES, "river-knn", "river-tree",
                                "river-ovr", "river-linear"]  # fmt: skip
    scores: dict[str, list[Score]] = {}
    streamed: float | None = None
    data = streams(opts)
    for each in data:
        found = baselines(each)
        scores[each.name] = [
            prequential(found[name](each), each, opts.args.chunk)
            for name in found
            if name in chosen
        ]
    churn: list[Churn] = []
    if "service" in chosen or "churn" in chosen:
        with gradual(opts) as server:
            _learn(server, data[0], "warm-up", opts)  # first-call costs are not the service's
            if "service" in chosen:
                streamed = _service_scores(server, data, scores, opts)
            if "churn" in chosen:
                names = CHURN_STREAMS[:1] if opts.smoke else CHURN_STREAMS
                long = streams(opts, opts.args.churn_passes, names)
                churn = [_churn(server, each, opts) for each in long]
    return Measured(scores, streamed, churn)


def _service_scores(
    server: Server, data: list[Stream], scores: dict[str, list[Score]], opts: Options
) -> float | None:
    for each in data:
        runs = [_learn(server, each, f"{each.name}-{i}", opts) for i in range(opts.runs)]
        scores[each.name].insert(0, _median_speed(runs))
    if data[0].name != "digits":
        return None
    rates = [
        asyncio.run(_stream_rate(server.port, data[0], f"ndjson-{i}", opts))
        for i in range(opts.runs)
    ]  # fmt: skip
    return median(rates)


def _churn(server: Server, data: Stream, opts: Options) -> Churn:
    name = f"churn-{data.name}"
    service = Service(data, server, model_body(name, data, opts.args), name, npy=opts.args.npy)
    try:
        prequential(service, data, opts.args.chunk)
        kinds = [e["kind"] for e in service.events()]
    finally:
        service.close()
    passes = len(data.y) // data.pass_rows
    stops = kinds.count("early_stop")
    return Churn(data.name, passes, kinds.count("round"), kinds.count("rollback"), stops,
                 kinds.count("resume"))  # fmt: skip


async def _stream_rate(port: int, data: Stream, name: str, opts: Options) -> float:
    """Rows learned per second when the stream comes as one NDJSON request, `--chunk` rows a
    line: lines are parsed while earlier ones train (no test-then-train round trips). Counted
    up to the last line that trained (the model may stop early, on patience)."""
    chunk = opts.args.chunk
    connection = await Connection.open(port)
    try:
        await connection.post("/v1/models", model_body(name, data, opts.args))
        starts = range(0, len(data.y), chunk)
        batches = [(data.x[i : i + chunk], data.y[i : i + chunk]) for i in starts]
        lines = [orjson.dumps({"inputs": x.tolist(), "targets": y.tolist()}) for x, y in batches]
        rows = [len(y) for _, y in batches]
        learned, last, start = 0, 0.0, time.perf_counter()

        def on_line(raw: bytes) -> None:
            nonlocal learned, last
            answer = orjson.loads(raw)
            if answer.get("trained"):
                learned, last = learned + rows[answer["line"] - 1], time.perf_counter()

        status = await connection.stream(f"/v1/models/{name}/partial-fit", lines, on_line)
        if status != 200 or learned == 0:
            raise RuntimeError(f"the NDJSON stream answered {status} and learned {learned} rows")
        return learned / (last - start)
    finally:
        await connection.close()


def _learn(server: Server, data: Stream, name: str, opts: Options) -> Score:
    body = model_body(name, data, opts.args)
    label = f"Gradual over HTTP (defaults{', .npy' if opts.args.npy else ''})"
    service = Service(data, server, body, label, npy=opts.args.npy)
    try:
        score = prequential(service, data, opts.args.chunk)
        if name.endswith("-0"):
            _note_state(service, data)
        return score
    finally:
        service.close()


def _median_speed(runs: list[Score]) -> Score:
    """The runs learn bit for bit alike (same model, same rows): only their speed differs."""
    if len({(r.first_pass, r.accuracy, r.log_loss) for r in runs}) != 1:
        raise RuntimeError(f"runs of the same stream learned differently: {runs}")
    middle = sorted(runs, key=lambda r: r.samples_per_s)[len(runs) // 2]
    return replace(runs[0], samples_per_s=middle.samples_per_s, per_cpu_s=middle.per_cpu_s)


def _note_state(service: Service, data: Stream) -> None:
    state = service.state()
    print(
        f"{data.name}: state {state['state']} ({state['stopping_reason']}), step {state['step']}, "
        f"served v{state['served_version']}, lr {state.get('lr')}, head prequential accuracy "
        f"{service.head_correct / len(data.y):.4f}",
        flush=True,
    )


def table(data: Stream, scores: list[Score], opts: Options) -> None:
    passes = len(data.y) // data.pass_rows
    title = f"{data.name} × {passes} pass(es), {len(data.y):,} rows, chunks of {opts.args.chunk}"
    out = Table(title=title)
    columns = ("learner", "acc. pass 1", "acc. all", "log loss", "samples/s", "per CPU-s")
    if data.task == "regression":
        columns = ("learner", "MAE pass 1", "MAE all", "MAE last pass", "samples/s", "per CPU-s")
    for column in columns:
        out.add_column(column, justify="left" if column == "learner" else "right")
    for s in scores:
        out.add_row(
            s.learner, f"{s.first_pass:.4f}", f"{s.accuracy:.4f}", f"{s.log_loss:.4f}",
            f"{s.samples_per_s:,.0f}", f"{s.per_cpu_s:,.0f}",
        )  # fmt: skip
    Console(width=160).print(out)


def churn_table(churn: list[Churn]) -> None:
    out = Table(title="churn on clean streams (the service's defaults)")
    for column in ("stream", "passes", "rounds", "rollbacks", "early stops", "resumes",
                   "rollbacks /1000 rounds", "stop→resume /1000 rounds"):  # fmt: skip
        out.add_column(column, justify="left" if column == "stream" else "right")
    for c in churn:
        out.add_row(
            c.stream, str(c.passes), str(c.rounds), str(c.rollbacks), str(c.stops),
            str(c.resumes), f"{c.per_1000(c.rollbacks):.1f}", f"{c.per_1000(c.resumes):.1f}",
        )  # fmt: skip
    Console(width=160).print(out)


def churn_figures(churn: list[Churn]) -> list[Row]:
    rows = []
    for c in churn:
        rows.append(Row(f"rollbacks per 1000 rounds, {c.stream} × {c.passes}",
                        f"{c.per_1000(c.rollbacks):.1f}", f"{c.rounds} rounds",
                        c.per_1000(c.rollbacks), "0", unit="per-1000-rounds"))  # fmt: skip
        rows.append(Row(f"stop → resume cycles per 1000 rounds, {c.stream} × {c.passes}",
                        f"{c.per_1000(c.resumes):.1f}", f"{c.stops} stops",
                        c.per_1000(c.resumes), "0", unit="per-1000-rounds"))  # fmt: skip
    return rows


def versus_river(scores: dict[str, list[Score]]) -> list[Row]:
    """The service against River's best learner on River's streams (MAE: lower is better)."""
    rows = []
    for name, lower in (("segments", False), ("trump", True)):
        found = scores.get(name, [])
        if len(found) < 2 or not found[0].learner.startswith("Gradual"):
            continue
        pick = min if lower else max
        best = pick(found[1:], key=lambda s: s.accuracy)
        metric = "MAE" if lower else "accuracy"
        gap = best.accuracy - found[0].accuracy if lower else found[0].accuracy - best.accuracy
        rows.append(Row(f"{name} prequential {metric} − River's best (≥ 0: as good or better)",
                        f"{found[0].accuracy:.4f}", f"{best.accuracy:.4f} ({best.learner})",
                        gap, "≥ 0", unit=metric))  # fmt: skip
    return rows


def figures(measured: Measured) -> list[Row]:
    scores, rate = measured.scores, measured.streamed
    digits, cancer = scores.get("digits", []), scores.get("cancer", [])
    extra = versus_river(scores) + churn_figures(measured.churn)
    if not digits or not digits[0].learner.startswith("Gradual"):
        return extra
    service, rows = digits[0], []
    rows.append(Row("digits prequential accuracy, HTTP defaults", f"{service.accuracy:.4f}", "-",
                    service.accuracy, "≥ 0.95", unit="accuracy"))  # fmt: skip
    rows.append(Row("learning throughput, HTTP defaults (digits)",
                    f"{service.samples_per_s:,.0f} samples/s", "-", service.samples_per_s,
                    "≥ 10000", unit="samples/s"))  # fmt: skip
    if rate is not None:
        rows.append(Row("learning throughput, one NDJSON stream, defaults (digits)",
                        f"{rate:,.0f} samples/s", "-", rate, "≥ 10000",
                        unit="samples/s"))  # fmt: skip
    batch1 = next((s for s in digits if s.learner.endswith("batch 1")), None)
    if batch1 is not None:
        rows.append(Row("learning throughput ÷ raw PyTorch batch 1 (digits)",
                        f"{service.samples_per_s:,.0f}", f"{batch1.samples_per_s:,.0f}",
                        service.samples_per_s / batch1.samples_per_s, "≥ 8"))  # fmt: skip
    if len(cancer) > 1:
        best = max(cancer[1:], key=lambda s: s.accuracy)
        rows.append(Row("cancer prequential accuracy − best baseline", f"{cancer[0].accuracy:.4f}",
                        f"{best.accuracy:.4f} ({best.learner})",
                        cancer[0].accuracy - best.accuracy, "≥ 0", unit="accuracy"))  # fmt: skip
    return rows + extra


def main() -> None:
    opts = options(__doc__ or "", runs=3, extend=extend)
    torch.set_num_threads(1)  # as the server's GRADUAL_TORCH_THREADS=1
    measured = measure(opts)
    for data in streams(opts):
        table(data, measured.scores[data.name], opts)
    if measured.churn:
        churn_table(measured.churn)
    report("Learning quality: the service's defaults against the baselines", figures(measured))


if __name__ == "__main__":
    main()
