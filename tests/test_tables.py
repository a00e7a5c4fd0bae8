"""Reading tables for the CLI (upweight.io.tables): CSV headers as R, Excel and people write
them, header/data agreement, target files with headers, non-numeric Parquet columns; every problem
an InputError naming the option, never a traceback or a silently shifted column."""

import numpy as np
import pytest

import upweight as uw
from upweight.io.tables import read_table

ROWS = np.array([[1.0, 2.0, 0.0], [3.0, 4.0, 1.0], [5.0, 6.5, 1.0]])


def write(path, text: str, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return path


def body():
    return "".join(",".join(f"{v:g}" for v in row) + "\n" for row in ROWS)


@pytest.mark.parametrize("header", ["a,b,y", '"a","b","y"', ' a , b , "y"'])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"])
def test_quoted_headers_and_a_byte_order_mark_are_read(tmp_path, header, encoding):
    X, y = read_table(write(tmp_path / "t.csv", header + "\n" + body(), encoding), "train", None)
    np.testing.assert_array_equal(X, ROWS[:, :2])
    np.testing.assert_array_equal(y, ROWS[:, 2])


@pytest.mark.parametrize("header, message", [
    ("a,y", "has 2 header names but 3 columns of data"),  # the target would silently shift
    ("a,b,c,y", "has 4 header names but 3 columns of data"),
])
def test_header_and_data_must_agree(tmp_path, header, message):
    with pytest.raises(uw.InputError, match=f"^train: .*{message}"):
        read_table(write(tmp_path / "t.csv", header + "\n" + body()), "train", None)


def test_empty_and_header_only_files_are_refused(tmp_path):
    with pytest.raises(uw.InputError, match="^train: .*is empty"):
        read_table(write(tmp_path / "e.csv", ""), "train", None)
    with pytest.raises(uw.InputError, match="^train: .*has a header but no data rows"):
        read_table(write(tmp_path / "h.csv", "a,b,y\n"), "train", None)


def test_a_target_table_with_a_header_gives_its_targets(tmp_path):
    feats = write(tmp_path / "x.csv", "a,b\n" + "".join(f"{r[0]:g},{r[1]:g}\n" for r in ROWS))
    for text in ("y\n0\n1\n1\n", "target\n0\n1\n1\n"):
        X, y = read_table(feats, "train", None, write(tmp_path / "y.csv", text))
        np.testing.assert_array_equal(y, [0.0, 1.0, 1.0])
        assert X.shape == (3, 2)
    with pytest.raises(uw.InputError, match="^--y: .*has 2 columns; expected one column"):
        read_table(feats, "train", None, write(tmp_path / "y2.csv", "p,q\n0,1\n1,1\n1,0\n"))


def test_non_numeric_parquet_columns_are_named(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    t = pa.table({"a": [1.0, 2.0], "when": pa.array([1, 2], type=pa.timestamp("s")), "y": [0.0, 1.0]})
    pq.write_table(t, tmp_path / "t.parquet")
    with pytest.raises(uw.InputError, match="^train: .*column 'when' has type timestamp"):
        read_table(tmp_path / "t.parquet", "train", None)


def test_an_npz_is_checked_from_its_headers_before_anything_is_inflated(tmp_path):
    """A compressed .npz declaring a (4e7, 3) X (960 MB inflated, 1 MB on disk) with a y of the
    wrong length is refused from the headers: nothing near the array's size is allocated."""
    import tracemalloc
    import zipfile

    path = tmp_path / "big.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("X.npy", "w", force_zip64=True) as f:  # streamed: the test never holds X either
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (40_000_000, 3)})
            chunk = np.zeros((1_000_000, 3)).tobytes()
            for _ in range(40):
                f.write(chunk)
        with zf.open("y.npy", "w") as f:
            np.lib.format.write_array(f, np.zeros(5))
    tracemalloc.start()
    try:
        with pytest.raises(uw.InputError, match=r"train: array 'y' of .* has shape \(5,\), expected \(40000000,\)"):
            read_table(path, "train", None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, peak


def test_an_npz_member_declaring_more_than_it_holds_is_refused(tmp_path):
    import zipfile

    path = tmp_path / "forged.npz"
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open("X.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 3)})
            f.write(b"\0" * 48)
    with pytest.raises(uw.InputError, match=r"train: array 'X' of .* declares shape \(1000000000000, 3\) .* truncated or corrupt"):
        read_table(path, "train", None)

def test_the_cli_refuses_a_forged_npz_with_an_error_not_a_crash(tmp_path, capsys):
    import zipfile

    from upweight.cli import main

    path = tmp_path / "forged.npz"
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open("X.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 3)})
            f.write(b"\0" * 48)
    assert main(["fit", str(path), "-o", str(tmp_path / "m.npz")]) != 0
    assert "truncated or corrupt" in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()


def test_text_and_missing_cells_are_named_by_column_and_line_with_the_fix(tmp_path):
    """A real table has identifiers, text labels and holes (docs/troubleshooting.md): each is
    named by its column and line, with what to do, and --drop leaves columns out."""
    text = "id,a,b,y\nP1,1,2,0\nP2,3,4,1\nP3,5,,1\n"
    path = write(tmp_path / "t.csv", text)
    with pytest.raises(uw.InputError, match=r"^train: .*column 'id' holds 'P1' on line 2, not a number: .*--drop id"):
        read_table(path, "train", None)
    with pytest.raises(uw.InputError, match=r"column 'b' is empty on line 4: upweight needs every value"):
        read_table(path, "train", None, drop=["id"])
    X, y = read_table(write(tmp_path / "ok.csv", text.replace(",,", ",6,")), "train", None, drop=["id"])
    np.testing.assert_array_equal(X, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(y, [0, 1, 1])
    labels = write(tmp_path / "labels.csv", "a,y\n1,yes\n2,no\n")
    with pytest.raises(uw.InputError, match=r"column 'y' holds 'yes' on line 2, not a number: encode the target as numbers"):
        read_table(labels, "train", None)
    with pytest.raises(uw.InputError, match=r"^drop: .* has no column 'nope'"):
        read_table(path, "train", None, drop=["nope"])


def test_drop_applies_to_the_training_and_the_query_table_in_the_cli(tmp_path):
    from upweight.cli import main

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 2))
    y = (X[:, 0] + rng.standard_normal(60) > 0).astype(float)
    rows = "".join(f"row{i},{a:.6f},{b:.6f},{t:g}\n" for i, ((a, b), t) in enumerate(zip(X, y, strict=True)))
    write(tmp_path / "train.csv", "name,a,b,y\n" + rows)
    write(tmp_path / "query.csv", "name,a,b,y\n" + rows[: rows.index("row3")])
    out = tmp_path / "top.npz"
    assert main(["score", str(tmp_path / "train.csv"), "--query", str(tmp_path / "query.csv"), "--family", "logistic",
                 "--l2", "1e-2", "--drop", "name", "-k", "3", "-o", str(out), "-q"]) == 0
    Xr = np.round(X, 6)
    model = uw.LogisticRegression(l2=1e-2).fit(Xr, y)
    top = uw.Influence(model, Xr, y).top_k(Xr[:3], y[:3], k=3)
    with np.load(out) as z:
        np.testing.assert_array_equal(z["helpful_idx"], top.helpful_idx)
