"""What a run's settings (TrainConfig, archdsl.gan's GanConfig) share: their JSON form, stored in
every checkpoint so that `--resume` continues the same run. Kept apart from config.py so that
reading a gan section does not import the training stack."""
from __future__ import annotations

import copy
from dataclasses import asdict


class SavedSettings:
    """Mixin for a settings dataclass with a field `spans` (key -> Span of the section, which
    is not saved)."""

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("spans")
        return d

    @classmethod
    def from_json(cls, d: dict):
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "spans"}
        return cls(**copy.deepcopy(known))
