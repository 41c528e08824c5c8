"""Hypothesis profiles: CI runs a fixed, derandomized search (the same examples every run,
so a failure reproduces); elsewhere each run explores new examples."""

import os
import sys
from pathlib import Path

from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))  # protocol_model

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
