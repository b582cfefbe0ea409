"""A new model: checked, its first version written, its row committed, its live state built.

The first version's file is written and fsynced before the row that names it commits; a row
that fails to commit leaves no file behind."""

from __future__ import annotations

from models.spec import NetworkSpec
from service.api.schemas import CreateModel
from service.errors import InvalidInput
from service.learning.control import BestVersion, Control
from service.learning.head import TrainingHead
from service.learning.race.candidates import Race, new_candidate
from service.learning.race.plan import plan_candidates
from service.learning.served import ServedModel
from service.learning.training_config import TrainingConfig
from service.runtime.assembly import Assembler
from service.runtime.live import LiveModel
from service.storage.changes import NewModel, NewVersion

# The validation buffer is allocated whole on the device: rows × features is bounded so that a
# spec cannot ask for tens of gigabytes (a 422, not an allocation failure).
MAX_BUFFER_VALUES = 50_000_000


def check_training(training: TrainingConfig, spec: NetworkSpec) -> None:
    """Refuses a training section the spec cannot follow (422 naming the field)."""
    try:
        training.check_task(spec.task)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="training.monitor") from None
    values = training.buffer_size * (spec.inputs + spec.outputs)
    if values > MAX_BUFFER_VALUES:
        most = MAX_BUFFER_VALUES // (spec.inputs + spec.outputs)
        raise InvalidInput(
            f"buffer_size {training.buffer_size} × {spec.inputs} features is too large; "
            f"at most {most} rows for this spec",
            field="training.buffer_size",
        )


def create_model(request: CreateModel, assembly: Assembler) -> LiveModel:
    """Runs on a worker thread: writes the first version and the row, builds the live model."""
    new = NewModel(
        name=request.name, task=request.spec.task, spec=request.spec.model_dump(),
        optimizer=request.optimizer.model_dump(), training=request.training.model_dump(),
        seed=request.seed,
    )  # fmt: skip
    race = _new_race(request, assembly)
    if race is None:
        head = TrainingHead(
            request.spec, request.optimizer, seed=request.seed, device=assembly.device
        )
    else:
        assert race.leader.head is not None
        head = race.leader.head
    checkpoint = head.checkpoint()
    written: list[NewVersion] = []

    def first_version(model_id: int) -> NewVersion:
        file = assembly.store.write(model_id, checkpoint)
        written.append(NewVersion(0, 0, {}, "init", None, file))
        return written[-1]

    try:
        row, _ = assembly.registry.create_model(new, first_version)
    except Exception:
        for version in written:  # its row never committed
            assembly.store.remove(version.file.path)
        raise
    served = ServedModel.from_state(
        head.spec, 1, checkpoint.network, assembly.device,
        compiled=assembly.limits.compile_predict,
    )  # fmt: skip
    best = BestVersion(1, head.state(), None)
    live = assembly.live(row, head, served, best, Control(), request.training, 1, 0, race=race)
    assembly.executor.snapshot(live, 0)  # the state replay starts from
    return live


def _new_race(request: CreateModel, assembly: Assembler) -> Race | None:
    if request.search is None:
        return None
    plans = plan_candidates(
        request.search, spec=request.spec, optimizer=request.optimizer,
        training=request.training, seed=request.seed,
    )  # fmt: skip
    return Race(request.search, [new_candidate(plan, assembly.device) for plan in plans])
