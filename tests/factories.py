"""Builders for request bodies and data, so tests read as behaviour, not dict soup."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def model_body(
    name: str = "m",
    *,
    task: str = "classification",
    inputs: int = 4,
    outputs: int = 3,
    hidden: list[int] | None = None,
    optimizer: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    seed: int = 0,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "spec": {
            "task": task,
            "inputs": inputs,
            "outputs": outputs,
            "hidden": [16] if hidden is None else hidden,
            **spec,
        },
        "optimizer": optimizer or {"name": "adam", "lr": 0.01},
        "training": training or {"batch_size": 16},
        "seed": seed,
    }


def rows(n: int, features: int = 4, *, seed: int = 0) -> list[list[float]]:
    return np.random.default_rng(seed).normal(size=(n, features)).round(4).tolist()


def labels(n: int, classes: int = 3, *, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(0, classes, size=n).tolist()


def digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (8×8 images, 10 classes): train/test, stratified."""
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y, test_size=0.3, random_state=seed, stratify=y
    )
    return x_train, x_test, y_train, y_test


def batches(x: np.ndarray, y: np.ndarray, size: int) -> list[dict[str, Any]]:
    return [
        {"inputs": x[i : i + size].tolist(), "targets": y[i : i + size].tolist()}
        for i in range(0, len(x), size)
    ]
