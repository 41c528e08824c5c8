"""Import the collection's plugins as ansible_collections.dhops.envoy.*, like Ansible does."""

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]
COLLECTIONS = pathlib.Path(os.environ.get("DHOPS_REPO_ROOT", ROOT)) / ".cache" / "collections"
if not (COLLECTIONS / "ansible_collections" / "dhops" / "envoy").exists():
    raise RuntimeError(f"{COLLECTIONS} has no dhops.envoy link: source scripts/harness/env.sh")
sys.path.insert(0, str(COLLECTIONS))
