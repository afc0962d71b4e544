from __future__ import annotations

from pathlib import Path

import pytest

from oncology.trainer import data
from oncology.trainer.data import DataError, parse

GOOD = "1000025,5,1,1,1,2,1,3,1,1,2\n1002945,5,4,4,5,7,10,3,2,1,2\n1017122,8,10,10,8,7,10,9,7,1,4\n"


def test_the_bundled_file_is_verified_and_read() -> None:
    ds = data.load()
    assert (ds.rows_read, len(ds), ds.rows_missing) == (699, 683, 16)
    assert ds.sha256 == data.BUNDLED_DATA_SHA256
    assert (int(ds.y.sum()), int((ds.y == 0).sum())) == (239, 444)
    assert ds.X.shape == (683, 9) and ds.X.min() == 1 and ds.X.max() == 10


def test_a_changed_bundled_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "bcw.data"
    copy.write_bytes(data.BUNDLED_DATA.read_bytes().replace(b"1000025,5", b"1000025,6", 1))
    monkeypatch.setattr(data, "BUNDLED_DATA", copy)
    with pytest.raises(DataError, match="differs from UCI's"):
        data.load()


def test_question_mark_is_a_missing_value_and_such_rows_are_counted() -> None:
    ds = parse((GOOD + "1057013,8,4,5,1,2,?,7,3,1,4\n").encode())
    assert (len(ds), ds.rows_missing, ds.rows_read) == (3, 1, 4)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("1,5,1,1,1,2,1,3,1,2", "expected 11 comma-separated fields, found 10"),
        ("1,5,1,1,1,2,1,3,1,1,2,9", "found 12"),
        ("1,5,1,1,1,2,11,3,1,1,2", "bare_nuclei is '11'"),
        ("1,5,1,1,1,2,0,3,1,1,2", "bare_nuclei is '0'"),
        ("1,5,1,1,x,2,1,3,1,1,2", "marginal_adhesion is 'x'"),
        ("1,5,1,1,1,2,1,3,1,1,3", "class is '3'"),
        ("1,5,1,1,1,2,1,3,1,1,?", "class is '?'"),
        ("abc,5,1,1,1,2,1,3,1,1,2", "sample id 'abc'"),
        ("", "found 1"),
    ],
)
def test_a_malformed_row_is_reported_with_its_line_number(line: str, reason: str) -> None:
    with pytest.raises(DataError) as info:
        parse((GOOD + line + "\n" + GOOD).encode(), "upload.data")
    assert "upload.data" in str(info.value)
    assert "line 4: " in str(info.value) and reason in str(info.value)


def test_binary_garbage_is_refused() -> None:
    with pytest.raises(DataError, match="not an ASCII text file"):
        parse(b"\xff\xfe" + GOOD.encode())


def test_one_class_only_cannot_train() -> None:
    with pytest.raises(DataError, match="both classes"):
        parse(GOOD.replace(",4\n", ",2\n").encode())
