"""What an op's NumPy forward needs besides its inputs and parameters."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ExecContext:
    training: bool = False
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
