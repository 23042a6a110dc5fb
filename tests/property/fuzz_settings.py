"""Hypothesis settings of the property tests: short by default, long on request.

``MPISH_FUZZ_EXAMPLES=N`` runs N examples per property test instead of 150, for a long
fuzzing run (``MPISH_FUZZ_EXAMPLES=200000 pytest tests/property --hypothesis-show-statistics``).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("MPISH_FUZZ_EXAMPLES") or 150)
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
