"""The streams and the learners of `bench.prequential`: bundled data sets repeated in shuffled
passes, and the baselines run beside the service on the same rows in the same order (River,
scikit-learn's MLP, raw PyTorch loops)."""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson
import torch
from sklearn.datasets import load_breast_cancer, load_digits
from torch import nn

from bench.servers import Server
from bench.wire import JSON, NPY, Connection


@dataclass(frozen=True)
class Stream:
    """`passes` shuffled passes over one data set, concatenated: the order every learner sees."""

    name: str
    x: np.ndarray  # float32 (rows, features)
    y: np.ndarray  # int64 class ids, or float32 values (regression: `classes` 0)
    classes: int
    pass_rows: int

    @property
    def features(self) -> int:
        return int(self.x.shape[1])

    @property
    def task(self) -> str:
        if self.classes == 0:
            return "regression"
        return "binary" if self.classes == 2 else "classification"


def stream(name: str, passes: int, *, seed: int = 0) -> Stream:
    x, y = LOADERS[name]()
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(x)) for _ in range(passes)])
    if y.dtype.kind == "f":
        return Stream(name, x[order].astype(np.float32), y[order].astype(np.float32), 0, len(x))
    classes = int(y.max()) + 1
    return Stream(name, x[order].astype(np.float32), y[order].astype(np.int64), classes, len(x))


def _river(name: str) -> tuple[np.ndarray, np.ndarray]:
    """One of the data sets River ships inside its wheel (no download), as arrays: features in
    the file's order, string labels numbered in sorted order."""
    from river import datasets

    rows = list(getattr(datasets, name)())
    keys = list(rows[0][0])
    x = np.array([[float(row[k]) for k in keys] for row, _ in rows])
    targets = [target for _, target in rows]
    if isinstance(targets[0], str):
        labels = {label: i for i, label in enumerate(sorted(set(targets)))}
        return x, np.array([labels[t] for t in targets], dtype=np.int64)
    return x, np.array(targets, dtype=np.float64)


LOADERS: dict[str, Any] = {
    "digits": lambda: load_digits(return_X_y=True),
    "cancer": lambda: load_breast_cancer(return_X_y=True),
    "segments": lambda: _river("ImageSegments"),  # 2,310 × 18, 7 classes
    "trump": lambda: _river("TrumpApproval"),  # 1,001 × 6 (a date ordinal), regression
}


class Learner(Protocol):
    name: str

    def cpu_seconds(self) -> float: ...  # CPU time of whatever does the learning, so far

    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...  # (rows, classes); (rows,) values

    def learn(self, x: np.ndarray, y: np.ndarray) -> None: ...


class InProcess:
    """A baseline learning in the bench's own process (one torch thread)."""

    def cpu_seconds(self) -> float:
        return time.process_time()


# -- River: one row at a time, behind a standard scaler -------------------------------------


class RiverLogistic(InProcess):
    name = "River StandardScaler | LogisticRegression"

    def __init__(self, data: Stream) -> None:
        from river import linear_model, multiclass, preprocessing

        classifier: Any = linear_model.LogisticRegression()
        if data.classes > 2:
            classifier = multiclass.OneVsRestClassifier(classifier)
        self.model = preprocessing.StandardScaler() | classifier
        self.classes = data.classes

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return _probabilities(self.model, x, self.classes)

    def learn(self, x: np.ndarray, y: np.ndarray) -> None:
        for row, label in zip(_dicts(x), y.tolist(), strict=True):
            self.model.learn_one(row, label)


class RiverLearner(InProcess):
    """Any River pipeline, one row at a time: `predict_proba` answers probabilities for a
    classifier and values for a regressor."""

    def __init__(self, data: Stream, name: str, model: Any) -> None:
        self.name, self.model, self.classes = name, model, data.classes

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.classes == 0:
            return np.array([self.model.predict_one(row) or 0.0 for row in _dicts(x)])
        return _probabilities(self.model, x, self.classes)

    def learn(self, x: np.ndarray, y: np.ndarray) -> None:
        for row, target in zip(_dicts(x), y.tolist(), strict=True):
            self.model.learn_one(row, target)


def river_learners(data: Stream) -> dict[str, Any]:
    """The River learners people reach for on this kind of stream, by short name."""
    from river import linear_model, multiclass, neighbors, preprocessing, tree

    scaled = preprocessing.StandardScaler
    if data.classes == 0:
        return {
            "river-linear": lambda: RiverLearner(data, "River StandardScaler | LinearRegression "
                "(TargetStandardScaler)", preprocessing.TargetStandardScaler(
                    scaled() | linear_model.LinearRegression())),
            "river-knn": lambda: RiverLearner(data, "River StandardScaler | KNNRegressor",
                scaled() | neighbors.KNNRegressor()),
            "river-tree": lambda: RiverLearner(data, "River HoeffdingAdaptiveTreeRegressor",
                tree.HoeffdingAdaptiveTreeRegressor(seed=0)),
        }  # fmt: skip
    return {
        "river": lambda: RiverLogistic(data),
        "river-knn": lambda: RiverLearner(data, "River StandardScaler | KNNClassifier",
            scaled() | neighbors.KNNClassifier()),
        "river-tree": lambda: RiverLearner(data, "River HoeffdingAdaptiveTreeClassifier",
            tree.HoeffdingAdaptiveTreeClassifier(seed=0)),
        "river-ovr": lambda: RiverLearner(data, "River StandardScaler | LogisticRegression (OvR)",
            scaled() | multiclass.OneVsRestClassifier(linear_model.LogisticRegression())),
    }  # fmt: skip


def _dicts(x: np.ndarray) -> list[dict[int, float]]:
    return [dict(enumerate(row)) for row in x.tolist()]


# -- scikit-learn: MLPClassifier.partial_fit on each request's rows -------------------------


class SklearnMLP(InProcess):
    name = "sklearn MLPClassifier.partial_fit (64)"

    def __init__(self, data: Stream) -> None:
        from sklearn.neural_network import MLPClassifier

        self.model = MLPClassifier(hidden_layer_sizes=(64,), random_state=0)
        self.classes = np.arange(data.classes)
        self.fitted = False

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if not self.fitted:
            return np.full((len(x), len(self.classes)), 1.0 / len(self.classes))
        proba: np.ndarray = self.model.predict_proba(x)
        return proba

    def learn(self, x: np.ndarray, y: np.ndarray) -> None:
        self.model.partial_fit(x, y, classes=self.classes)
        self.fitted = True


# -- raw PyTorch: the MLP the service builds by default, Adam 1e-3, no scaling ---------------


class TorchLoop(InProcess):
    def __init__(self, data: Stream, *, batch: int) -> None:
        torch.manual_seed(0)
        self.network = nn.Sequential(
            nn.Linear(data.features, 64), nn.ReLU(), nn.Linear(64, data.classes)
        )
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=1e-3)
        self.loss = nn.CrossEntropyLoss()
        self.batch = batch
        self.name = f"raw PyTorch MLP (64), Adam 1e-3, batch {batch}"

    @torch.no_grad()
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        proba: np.ndarray = torch.softmax(self.network(torch.from_numpy(x)), dim=1).numpy()
        return proba

    def learn(self, x: np.ndarray, y: np.ndarray) -> None:
        xs, ys = torch.from_numpy(x), torch.from_numpy(y)
        for start in range(0, len(xs), self.batch):
            self.optimizer.zero_grad(set_to_none=True)
            end = start + self.batch
            self.loss(self.network(xs[start:end]), ys[start:end]).backward()
            self.optimizer.step()


# -- the service, over HTTP: predict with the served version, then partial-fit ---------------


class Service:
    """A model on a running Gradual server, driven through one keep-alive connection."""

    def __init__(
        self, data: Stream, server: Server, body: dict[str, Any], label: str, *, npy: bool = False
    ) -> None:
        self.runner = asyncio.Runner()
        self.server = server
        self.connection = self.runner.run(Connection.open(server.port))
        self.model = str(body["name"])
        self.name = label
        self.head_correct = 0  # the fit answers' `prequential` (the head, not the served version)
        self.trained = True
        self.runner.run(self.connection.post("/v1/models", body))
        self.npy = npy  # partial-fit bodies as `.npy` structured arrays instead of JSON

    def cpu_seconds(self) -> float:
        return self.server.cpu_seconds()

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        body = orjson.dumps({"inputs": x.tolist()})
        answer = self._post(f"/v1/models/{self.model}/predict", body)
        if answer.get("probabilities") is None:  # regression: the values
            return np.asarray(answer["predictions"], dtype=np.float64).reshape(len(x))
        return np.asarray(answer["probabilities"], dtype=np.float64)

    def learn(self, x: np.ndarray, y: np.ndarray) -> None:
        path = f"/v1/models/{self.model}/partial-fit"
        if self.npy:
            answer = self._post(path, _npy(x, y), NPY)
        else:
            answer = self._post(path, orjson.dumps({"inputs": x.tolist(), "targets": y.tolist()}))
        self.head_correct += round(answer["prequential"].get("accuracy", 0.0) * len(x))
        self.trained = answer["trained"] > 0  # a stopped model answers without training

    def state(self) -> dict[str, Any]:
        found: dict[str, Any] = self.runner.run(self.connection.get(f"/v1/models/{self.model}"))
        return found

    def events(self) -> list[dict[str, Any]]:
        path = f"/v1/models/{self.model}/events"
        found: list[dict[str, Any]] = self.runner.run(self.connection.get(path))["events"]
        return found

    def close(self) -> None:
        self.runner.run(self.connection.close())
        self.runner.close()

    def _post(self, path: str, body: bytes, content_type: str = JSON) -> Any:
        answer = self.runner.run(self.connection.request("POST", path, body, content_type))
        return answer.ok().json()


def _npy(x: np.ndarray, y: np.ndarray) -> bytes:
    target = "<f4" if y.dtype.kind == "f" else "<i8"
    table = np.zeros(len(x), dtype=[("inputs", "<f4", (x.shape[1],)), ("targets", target)])
    table["inputs"], table["targets"] = x, y
    buffer = io.BytesIO()
    np.save(buffer, table, allow_pickle=False)
    return buffer.getvalue()


# -- test-then-train --------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    learner: str
    first_pass: float  # prequential accuracy over the first pass (regression: MAE)
    accuracy: float  # over all passes (regression: MAE)
    log_loss: float  # (regression: the MAE of the last pass)
    samples_per_s: float  # rows ÷ seconds spent in `learn` calls that trained
    per_cpu_s: float  # rows learned ÷ CPU-seconds of the learner (the server's, for the service)


def prequential(learner: Learner, data: Stream, chunk: int) -> Score:
    """Each chunk of `chunk` rows is scored by the learner as it stands, then learned."""
    correct = np.zeros(len(data.y), dtype=np.float64)  # regression: absolute errors
    nll = np.zeros(len(data.y))
    learning = cpu = 0.0
    learned = 0  # rows of the calls that trained: only those are timed
    for start in range(0, len(data.y), chunk):
        x, y = data.x[start : start + chunk], data.y[start : start + chunk]
        proba = learner.predict_proba(x)
        if data.classes == 0:
            correct[start : start + chunk] = np.abs(proba - y)
        else:
            correct[start : start + chunk] = proba.argmax(axis=1) == y
            nll[start : start + chunk] = -np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, 1))
        # The server's CPU is read from /proc (milliseconds a read): outside the clock.
        begin_cpu = learner.cpu_seconds()
        begin = time.perf_counter()
        learner.learn(x, y)
        elapsed = time.perf_counter() - begin
        if getattr(learner, "trained", True):
            learning += elapsed
            cpu += learner.cpu_seconds() - begin_cpu
            learned += len(y)
    last = float(correct[-data.pass_rows :].mean()) if data.classes == 0 else float(nll.mean())
    return Score(
        learner.name, float(correct[: data.pass_rows].mean()), float(correct.mean()),
        last, learned / max(learning, 1e-9), learned / max(cpu, 1e-9),
    )  # fmt: skip


def _probabilities(model: Any, x: np.ndarray, classes: int) -> np.ndarray:
    """A River classifier's probabilities, row by row (uniform where it has not seen a class)."""
    out = np.full((len(x), classes), 1.0 / classes)
    for i, row in enumerate(_dicts(x)):
        for label, p in model.predict_proba_one(row).items():
            out[i, int(label)] = p
    return out
