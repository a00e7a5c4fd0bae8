"""Constants of the Rust core that the Python layer needs, read from ``_core`` in this one place."""

from __future__ import annotations

from . import _core

#: Training rows per block of the core's parallel loops (rust/blocks.rs). Streaming runs cut at
#: multiples of it see the same blocks as one pass, hence give bitwise the same results.
BLOCK_ROWS: int = _core.BLOCK_ROWS

#: Up to this many parameters the core forms H by row blocks; above it, by tiles
#: (rust/objective/hessian.rs). The cost model of ``solver="auto"`` has one constant per schedule.
TILED_HESSIAN_MAX_ROW_BLOCK_P: int = _core.TILED_HESSIAN_MAX_ROW_BLOCK_P
