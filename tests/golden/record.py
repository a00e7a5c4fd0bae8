"""Record the golden outputs of tests/test_golden.py. Run ONCE, against a known-good build.

    python tests/golden/record.py            # every area
    python tests/golden/record.py cli fit    # only these areas

The stored outputs were recorded from commit df097f3222fe0f78efbc804c3014a293c51261b8 (see
README.md here). Do NOT re-record to make a failing golden test pass: a failure means today's
build computes something different from df097f3; find out why.

Writes tests/golden/<area>.npz (compressed; every array key of the area) and
tests/golden/text/<key>.txt (CLI stdout), from the calls in cases.py.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cases  # noqa: E402

cases.RECORDING = True

import upweight  # noqa: E402


def record(area: str) -> tuple[int, int]:
    with tempfile.TemporaryDirectory(prefix="upweight-golden-") as tmp:
        out = cases.cases(area, Path(tmp))
    arrays, texts = {}, {}
    for key, value in out.items():
        if isinstance(value, cases.Text):
            texts[key] = str(value)
        else:
            arrays[key] = cases.to_array(value)
            if arrays[key].dtype == object:
                raise TypeError(f"{key}: object array")
    np.savez_compressed(HERE / f"{area}.npz", **arrays)
    text_dir = HERE / "text"
    text_dir.mkdir(exist_ok=True)
    for old in text_dir.glob(f"{area}__*.txt"):
        old.unlink()
    for key, value in texts.items():
        with open(text_dir / cases.text_filename(key), "w", newline="") as f:
            f.write(value)
    return len(arrays), len(texts)


def main(argv: list[str]) -> int:
    areas = argv or list(cases.AREAS)
    unknown = [a for a in areas if a not in cases.AREAS]
    if unknown:
        print(f"unknown areas {unknown}; known: {list(cases.AREAS)}", file=sys.stderr)
        return 2
    print(f"recording with upweight from {upweight.__file__}")
    for area in areas:
        n_arrays, n_texts = record(area)
        size = (HERE / f"{area}.npz").stat().st_size
        print(f"  {area}: {n_arrays} arrays ({size / 1e3:.0f} kB), {n_texts} texts")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
