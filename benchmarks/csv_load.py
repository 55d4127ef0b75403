"""How fast the csv dataset reads a large table: a generated 1,000,000-row x 20-column CSV
(17 numeric columns, 2 text columns, a class label), loaded by ``load_dataset("csv")`` (sniffing,
the field-count check, type decisions, one-hot encoding, the split, statistics), beside pandas'
read_csv of the same file alone (the floor: layerwise reads with it), in the same run.

    python benchmarks/csv_load.py [--rows 1000000] [--repeats 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment  # noqa: E402


def write_table(path: Path, rows: int) -> None:
    import pandas as pd

    rng = np.random.default_rng(0)
    cols = {f"x{i}": rng.normal(size=rows).round(4) for i in range(17)}
    cols["colour"] = rng.choice(["red", "green", "blue", "NA"], rows)
    cols["shop"] = rng.choice([f"shop{i}" for i in range(50)], rows)
    cols["label"] = rng.integers(0, 3, rows)
    pd.DataFrame(cols).to_csv(path, index=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    import pandas as pd

    from layerwise.config import DataConfig
    from layerwise.data import load_dataset

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.csv"
        write_table(path, args.rows)
        size_mb = path.stat().st_size / 1e6
        ours, floor = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            pd.read_csv(path)
            floor.append(time.perf_counter() - t)
            t = time.perf_counter()
            ds = load_dataset("csv", tmp, DataConfig(name="csv", path="big.csv"))
            ours.append(time.perf_counter() - t)
    res = {"benchmark": "csv_load", "rows": args.rows, "columns": 20, "file_mb": round(size_mb, 1),
           "layerwise_seconds_median": round(statistics.median(ours), 2), "layerwise_seconds": [round(v, 2) for v in ours],
           "pandas_read_csv_seconds_median": round(statistics.median(floor), 2),
           "ratio_to_pandas": round(statistics.median(ours) / statistics.median(floor), 2),
           "features": int(ds.info.in_shape[0]), "train": len(ds.y_train), "test": len(ds.y_test),
           "target_seconds": 10.0, "env": environment()}
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
