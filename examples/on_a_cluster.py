"""Fit and explain a model on a training set chunked by rows, on Dask (docs/large-data.md, "On a cluster").

    pip install '.[dask]' && python examples/on_a_cluster.py

A LocalCluster stands in for a real one: with a cluster of your own, connect a
``distributed.Client`` to it instead and keep the rest. The training set is written as .npy
shards (in practice: files on shared storage, or a Parquet dataset via uw.dask.from_parquet).
"""

import tempfile
from pathlib import Path

import numpy as np
from distributed import Client, LocalCluster

import upweight as uw

if __name__ == "__main__":  # (worker processes import this file)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        beta = rng.standard_normal(8)
        for shard in range(4):  # 4 shards of 25000 rows
            X = rng.standard_normal((25_000, 8))
            np.save(Path(tmp) / f"X-{shard}.npy", X)
            np.save(Path(tmp) / f"y-{shard}.npy", (rng.random(25_000) < 1 / (1 + np.exp(-X @ beta))).astype(float))
        X_test = rng.standard_normal((5, 8))
        y_test = (X_test @ beta > 0).astype(float)

        with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, Client(cluster):
            Xd = uw.dask.from_npy(sorted(Path(tmp).glob("X-*.npy")), chunk_rows=10_000)  # lazy: read by the workers
            yd = uw.dask.from_npy(sorted(Path(tmp).glob("y-*.npy")), chunk_rows=10_000)  # the same rows per chunk as X

            model = uw.LogisticRegression(l2=1e-3).fit(Xd, yd)  # Newton: one pass over the chunks per step
            inf = uw.Influence(model, Xd, yd)  # one pass: H summed over the chunks, factored here
            top = inf.top_k(X_test, y_test, k=3)  # per-chunk top-k lists, merged by a fixed tree
            S = inf.on_loss(X_test, y_test)  # lazy (5, 100000) dask array, chunked like X's rows
            uw.dask.save_npy_stack(S, Path(tmp) / "scores")  # written by the workers, all or nothing
            suspicious = inf.self_influence()  # lazy (100000,)
            worst = np.argsort(suspicious.compute())[:5]

            print(f"fitted in {model.n_iter_} Newton steps; {inf!r}")
            print("test point 0: most helpful training rows", top.helpful_idx[0], "most harmful", top.harmful_idx[0])
            print("score matrix written:", sorted(p.name for p in (Path(tmp) / "scores").iterdir())[:3], "...")
            print("most self-influential training rows:", worst)
