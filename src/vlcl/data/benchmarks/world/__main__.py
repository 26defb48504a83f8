"""``python -m vlcl.data.benchmarks.world OUT_DIR``: one preview contact sheet per domain."""

import sys

from vlcl.data.benchmarks.world.preview import _write_previews

_write_previews(sys.argv[1] if len(sys.argv) > 1 else "world_preview")
