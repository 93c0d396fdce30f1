"""From duplicate groups to actions: which members an action may touch, in one small place.

The groups come from `duplicates.duplicate_groups(owner=...)`; only `keep_id` and the member ids are
read here, and SHA256 values are looked up in FileHashes, so this does not depend on how a group
describes its members' relations.
"""
from __future__ import annotations

from dataclasses import dataclass

from models_catalog.models import FileHashes
from models_catalog.services.duplicates import duplicate_groups

ACTIONS = ("hardlink", "quarantine")


def sha256_by_id(ids) -> dict[int, str]:
    return dict(FileHashes.objects.filter(local_file_id__in=list(ids)).exclude(sha256="")
                .values_list("local_file_id", "sha256"))


def selected_members(group, *, action: str, sha256: dict[int, str]) -> list[int]:
    """THE selection: the members of `group` that `action` may touch.

    Both actions take the exact copies of the keeper: the members in the keeper's byte-identical set
    (`copy_set`) whose relation is "exact copy" and whose stored SHA256 is the keeper's. A "same file"
    member (already a hard link of it) is left alone: moving or linking it frees nothing. Converted,
    same-weights and other-precision copies are never chosen: they are not the keeper's bytes.
    """
    keeper_sha = sha256.get(group.keep_id)
    if not keeper_sha or action not in ACTIONS:
        return []
    keeper_set = next((m.copy_set for m in group.members if m.id == group.keep_id), None)
    return [m.id for m in group.members if m.id != group.keep_id and m.copy_set == keeper_set
            and m.match == "exact copy" and sha256.get(m.id) == keeper_sha]


@dataclass
class GroupPlan:
    group: object  # a duplicates.DuplicateGroup
    action: str
    keeper_id: int
    file_ids: list[int]


def group_plans(*, groups, action: str) -> list[GroupPlan]:
    """One plan per group that has something for `action` to do."""
    ids = {m.id for g in groups for m in g.members}
    sha256 = sha256_by_id(ids)
    plans = []
    for g in groups:
        chosen = selected_members(g, action=action, sha256=sha256)
        if chosen:
            plans.append(GroupPlan(group=g, action=action, keeper_id=g.keep_id, file_ids=chosen))
    return plans


def group_plan_for(*, owner, file_id: int, action: str, prefer_precision: str = "lossless") -> GroupPlan | None:
    """The plan for the owner's group that holds `file_id` (any member, e.g. its keep_id), as grouped now."""
    for g in duplicate_groups(owner=owner, prefer_precision=prefer_precision):
        if any(m.id == file_id for m in g.members):
            plans = group_plans(groups=[g], action=action)
            return plans[0] if plans else GroupPlan(group=g, action=action, keeper_id=g.keep_id, file_ids=[])
    return None


def action_params(plan_or_ids, *, action: str, keeper_id: int | None = None) -> tuple[str, dict]:
    """(Job kind, params) for an action on a plan or on explicit ids."""
    if isinstance(plan_or_ids, GroupPlan):
        keeper_id, ids = plan_or_ids.keeper_id, plan_or_ids.file_ids
    else:
        ids = list(plan_or_ids)
    if action == "hardlink":
        return "hardlink", {"keeper_id": keeper_id, "copy_ids": ids}
    return "quarantine", {"file_ids": ids}
