"""`gradual models` and `gradual create`: the models a service holds."""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli.remote import DEFAULT_URL, Token, Url, connect


def models(url: Url = DEFAULT_URL, token: Token = None) -> None:
    """List the models."""
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "task", "state", "step", "samples", "served", "head", "best")
    with connect(url, token) as client:
        for m in client.list():
            best = f"{m.best_metric:.4f}" if m.best_metric is not None else "-"
            table.add_row(
                m.name, m.task, m.state, str(m.step), str(m.samples_seen),
                f"v{m.served_version}", f"v{m.head_version}", best,
            )  # fmt: skip
    Console().print(table)


def create(
    name: str,
    task: Annotated[str, typer.Option(help="classification | binary | regression")],
    inputs: Annotated[int, typer.Option(help="Features per row.")],
    outputs: Annotated[int, typer.Option(help="Classes, 1 for binary, or targets.")],
    hidden: Annotated[str, typer.Option(help="Neurons per hidden layer, e.g. 64,64.")] = "64",
    activation: str = "relu",
    dropout: float = 0.0,
    optimizer: str = "adam",
    lr: Annotated[
        float | None, typer.Option(help="Learning rate; default: the service's (see README).")
    ] = None,
    batch_size: int = 64,
    seed: int = 0,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Create a model from spec options."""
    try:
        layers = [int(width) for width in hidden.split(",") if width.strip()]
    except ValueError:
        hint = "widths separated by commas, e.g. 64,64"
        raise typer.BadParameter(hint, param_hint="--hidden") from None
    spec = {
        "task": task, "inputs": inputs, "outputs": outputs, "hidden": layers,
        "activation": activation, "dropout": dropout,
    }  # fmt: skip
    with connect(url, token) as client:
        model = client.create(
            name, spec, optimizer={"name": optimizer} | ({} if lr is None else {"lr": lr}),
            training={"batch_size": batch_size}, seed=seed,
        )  # fmt: skip
    typer.echo(f"created {model.name}: v{model.served_version} on {model.device}")
