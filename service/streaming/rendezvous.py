"""Rendezvous (highest-random-weight) hashing: which live replica owns which model.

Every replica computes the same answer from the same member list, with no coordination: a
model goes to the member whose hash of (member, model) is highest. When a member joins, only
the models it now wins move (about 1/N of them); when one leaves, only its own models move,
each to its runner-up. The hash is BLAKE2b, not Python's `hash()`, which differs per process.

With a few dozen models plain HRW is uneven (24 models on 4 members: 7, 6, 4 and 7), so the
cluster uses `balanced`: HRW with bounded loads. Models are visited in an order fixed by
their own hash, and each goes to its highest-ranked member that still has room under the
mean (rounded up for as many members as the division leaves over); a join or a leave then
moves about 1/N of the models plus the few that overflow, and every member owns within one
of the mean.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable


def weight(model: str, member: str) -> int:
    digest = hashlib.blake2b(f"{member}\x00{model}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(model: str, members: Collection[str]) -> str | None:
    """The member that owns `model`, or None without members (ties: the larger name)."""
    if not members:
        return None
    return max(members, key=lambda member: (weight(model, member), member))


def assignment(models: Iterable[str], members: Collection[str]) -> dict[str, list[str]]:
    """Each member's models, sorted; every member appears, owning nothing or more."""
    owned: dict[str, list[str]] = {member: [] for member in sorted(members)}
    for model in sorted(models):
        chosen = owner(model, members)
        if chosen is not None:
            owned[chosen].append(model)
    return owned


def balanced(models: Iterable[str], members: Collection[str]) -> dict[str, str]:
    """Each model's member, every member owning the mean rounded down or up."""
    names = sorted(set(models), key=lambda model: (weight(model, ""), model))
    if not members:
        return {}
    floor, extra = divmod(len(names), len(members))  # `extra` members may own one more
    load = dict.fromkeys(members, 0)
    chosen: dict[str, str] = {}
    for model in names:
        ranked = sorted(members, key=lambda member: (weight(model, member), member), reverse=True)
        pick = next(m for m in ranked if load[m] < floor or (load[m] == floor and extra > 0))
        extra -= load[pick] == floor
        load[pick] += 1
        chosen[model] = pick
    return chosen
