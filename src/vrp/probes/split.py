"""Train / validation / test split grouped by image and stratified by label.

The assignment is a seeded greedy one (our own, because scikit-learn's ``StratifiedGroupKFold``
gives folds, not arbitrary fractions):

1. Coverage: for each class, rarest first, every side that has no group holding the class yet
   gets one (the smallest unassigned such group), so every side sees every class.
2. Fill: the other groups, largest first (ties broken by the seeded shuffle), each go to the side
   where they most reduce the squared deviation of the per-class counts from their targets
   ``fraction * class_total`` (deviations divided by the class total, so the minority class
   counts as much as the majority). Item fractions follow because they are sums of class counts.

With many small groups (a few questions per image) the item fractions come out within a
percent or two of the requested ones; a few large groups can pull them further, since a group
is never cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIDES = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class Split:
    """Item indices of each side, sorted ascending (int64 arrays)."""

    train: np.ndarray  # [n_train]
    val: np.ndarray  # [n_val]
    test: np.ndarray  # [n_test]

    def to_dict(self) -> dict[str, list[int]]:
        """JSON-ready form: side name -> list of item indices."""
        return {name: [int(i) for i in getattr(self, name)] for name in SIDES}

    @classmethod
    def from_dict(cls, data: dict) -> Split:
        """Inverse of :meth:`to_dict`; rejects unknown keys."""
        if set(data) != set(SIDES):
            raise ValueError(f"a Split needs exactly the keys {SIDES}, got {sorted(data)}")
        return cls(**{name: np.asarray(data[name], dtype=np.int64) for name in SIDES})


def grouped_stratified_split(
    labels, groups, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), seed: int = 0
) -> Split:
    """Split items into train / val / test so that no group is on two sides and classes stay balanced.

    Args:
        labels: [n] class label of each item (any hashable values; usually 0/1 ``correct``).
        groups: [n] group of each item (the image id): all items of a group land on one side.
        fractions: target share of items for train, val and test; positive, summing to 1.
        seed: seeds the tie-breaking shuffle; the same inputs and seed give the same split.

    Returns:
        The :class:`Split`; every side holds every class.

    Raises:
        ValueError: mismatched inputs, bad fractions, fewer than two classes, fewer than three
            groups, or a class found in fewer than three groups (it could not reach every side).
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    if labels.ndim != 1 or groups.shape != labels.shape or labels.size == 0:
        raise ValueError(f"labels and groups must be 1-D of one non-zero length, got {labels.shape} and {groups.shape}")
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.shape != (3,) or (frac <= 0).any() or abs(frac.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"a stratified split needs at least two classes, got only {classes.tolist()}")
    group_ids, g = np.unique(groups, return_inverse=True)
    if len(group_ids) < 3:
        raise ValueError(f"a three-way grouped split needs at least 3 groups (images), got {len(group_ids)}")
    counts = np.zeros((len(group_ids), len(classes)), dtype=np.int64)  # [group, class]
    np.add.at(counts, (g, y), 1)
    holders = (counts > 0).sum(0)  # [class] number of groups holding the class
    for c in np.flatnonzero(holders < 3):
        raise ValueError(
            f"class {classes[c]!r} occurs in only {holders[c]} group(s); each of the 3 sides needs one: "
            "collect more items of that class or use a two-way split"
        )

    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(group_ids))
    side = np.full(len(group_ids), -1)
    filled = np.zeros((3, len(classes)))  # [side, class]
    for c in np.argsort(holders, kind="stable"):  # coverage, rarest class first
        for s in range(3):
            if filled[s, c] > 0:
                continue
            free = shuffled[(side[shuffled] < 0) & (counts[shuffled, c] > 0)]
            if len(free) == 0:
                raise ValueError(f"cannot give every side an item of class {classes[c]!r}: too few groups hold it")
            pick = free[np.argmin(counts[free].sum(1), axis=0)]  # smallest such group
            side[pick] = s
            filled[s] += counts[pick]

    total = counts.sum(0).astype(np.float64)  # [class]
    target = frac[:, None] * total[None, :]  # [side, class]
    rest = shuffled[side[shuffled] < 0]
    rest = rest[np.argsort(-counts[rest].sum(1), kind="stable")]  # largest first, seeded ties
    for grp in rest:
        add = counts[grp]
        before = ((filled - target) / total) ** 2
        after = ((filled + add - target) / total) ** 2
        s = int(np.argmin((after - before).sum(1)))
        side[grp] = s
        filled[s] += add

    item_side = side[g]
    return Split(*(np.flatnonzero(item_side == s).astype(np.int64) for s in range(3)))
