"""What the confirm dialog says before anything moves: the plan, counted, and each file's
trash (found without creating anything)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from photodup_tui.engine.safedelete import Plan
from photodup_tui.engine.safedelete.trash import TrashUnavailable, usable_location


@dataclass(slots=True)
class PlanSummary:
    """What the confirm dialog says: exactly what the plan will do, and where files go."""

    plan: Plan
    files: int
    bytes: int
    trash_dirs: Counter[str] = field(default_factory=Counter)  # trash dir -> files
    no_trash: list[tuple[str, str]] = field(default_factory=list)  # (path, why not)
    by_kind: Counter[str] = field(default_factory=Counter)


def summarize(plan: Plan) -> PlanSummary:
    """Count the plan and find each file's trash (one lookup per device, nothing created)."""
    summary = PlanSummary(plan, files=len(plan.operations), bytes=plan.bytes_planned)
    per_device: dict[int, str | TrashUnavailable] = {}
    for op in plan.operations:
        summary.by_kind[op.group_kind.value] += 1
        dev = op.victim.stat.dev
        if dev not in per_device:
            try:
                per_device[dev] = usable_location(op.victim.path).trash_dir
            except (TrashUnavailable, OSError) as exc:
                per_device[dev] = TrashUnavailable(str(exc))
        where = per_device[dev]
        if isinstance(where, TrashUnavailable):
            summary.no_trash.append((op.victim.path, str(where)))
        else:
            summary.trash_dirs[where] += 1
    return summary
