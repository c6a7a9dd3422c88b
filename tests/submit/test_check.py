"""submit.check: each rule of docs/challenge.md section 6 has a failing case with its own message."""
from __future__ import annotations

import numpy as np
import pytest

from competition.schema import CLIENT_IDS_FILE, EMBEDDINGS_FILE, DataPaths
from submit.check import SubmissionError, assert_valid, check_arrays, check_submission, main

RELEVANT = np.array([7, 3, 11, 5], dtype=np.int64)


def _good(n_cols: int = 4):
    ids = RELEVANT[::-1].copy()  # any permutation is fine
    emb = np.arange(len(ids) * n_cols, dtype=np.float16).reshape(len(ids), n_cols)
    return ids, emb


def _rules(failures) -> set[str]:
    return {f.rule for f in failures}


def test_valid_arrays_pass():
    ids, emb = _good()
    assert check_arrays(ids, emb, RELEVANT) == []


def test_dtypes():
    ids, emb = _good()
    f = check_arrays(ids.astype(np.int32), emb.astype(np.float32), RELEVANT)
    assert _rules(f) == {"client_ids dtype", "embeddings dtype"}
    msg = "\n".join(map(str, f))
    assert "int64, got int32" in msg and "float16, got float32" in msg


def test_shapes():
    ids, emb = _good()
    f = check_arrays(ids.reshape(2, 2), emb, RELEVANT)
    assert "client_ids shape" in _rules(f)
    f = check_arrays(ids, emb[:, 0], RELEVANT)
    assert "embeddings shape" in _rules(f)
    assert "2-D" in str(f[0])


def test_row_count():
    ids, emb = _good()
    f = check_arrays(ids, emb[:3], RELEVANT)
    assert _rules(f) == {"row count"}
    assert "3 row(s)" in str(f[0]) and "4 id(s)" in str(f[0])


def test_id_set_reports_missing_extra_and_duplicates():
    ids = np.array([7, 3, 3, 99, 99, 99], dtype=np.int64)
    emb = np.zeros((6, 2), dtype=np.float16)
    f = check_arrays(ids, emb, RELEVANT)
    assert _rules(f) == {"client_ids set"}
    msg = str(f[0])
    assert "2 relevant client(s) missing" in msg        # 11 and 5
    assert "1 extra id(s)" in msg and "99" in msg         # 99
    assert "3 duplicate row(s) of 2 id(s)" in msg         # one extra 3, two extra 99


def test_column_limits():
    ids, _ = _good()
    assert "embeddings columns" in _rules(check_arrays(ids, np.zeros((4, 0), np.float16), RELEVANT))
    f = check_arrays(ids, np.zeros((4, 2049), np.float16), RELEVANT)
    assert _rules(f) == {"embeddings columns"} and "2049" in str(f[0])
    assert check_arrays(ids, np.zeros((4, 2048), np.float16), RELEVANT) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(bad):
    ids, emb = _good()
    emb[2, 1] = bad
    f = check_arrays(ids, emb, RELEVANT)
    assert _rules(f) == {"embeddings finite"} and "1 NaN or Inf" in str(f[0])


def _world(tmp_path):
    data = tmp_path / "data"
    DataPaths(data).relevant_clients.parent.mkdir(parents=True)
    np.save(DataPaths(data).relevant_clients, RELEVANT)
    return data


def test_folder_and_cli(tmp_path, capsys):
    data, sub = _world(tmp_path), tmp_path / "sub"
    sub.mkdir()
    ids, emb = _good()
    np.save(sub / CLIENT_IDS_FILE, ids)
    np.save(sub / EMBEDDINGS_FILE, emb)
    assert check_submission(data, sub) == []
    assert_valid(data, sub)
    assert main(["--data-dir", str(data), "--embeddings-dir", str(sub)]) == 0
    assert "valid" in capsys.readouterr().out

    # several rules at once: all are listed, exit code non-zero
    np.save(sub / CLIENT_IDS_FILE, ids[:3].astype(np.int32))
    emb = emb.astype(np.float32)
    emb[0, 0] = np.nan
    np.save(sub / EMBEDDINGS_FILE, emb)
    assert main(["--data-dir", str(data), "--embeddings-dir", str(sub)]) == 1
    err = capsys.readouterr().err
    for rule in ("client_ids dtype", "client_ids set", "embeddings dtype", "embeddings finite", "row count"):
        assert f"[{rule}]" in err
    with pytest.raises(SubmissionError) as exc:
        assert_valid(data, sub)
    assert len(exc.value.failures) == 5


def test_missing_and_unreadable_files(tmp_path):
    data, sub = _world(tmp_path), tmp_path / "sub"
    sub.mkdir()
    f = check_submission(data, sub)
    assert _rules(f) == {"file present"} and len(f) == 2
    (sub / EMBEDDINGS_FILE).write_bytes(b"not numpy")
    np.save(sub / CLIENT_IDS_FILE, RELEVANT)
    f = check_submission(data, sub)
    assert _rules(f) == {"file readable"} and EMBEDDINGS_FILE in str(f[0])
