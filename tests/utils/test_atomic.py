"""One way to write a CSV table: rows as sequences or mappings, written atomically."""

from __future__ import annotations

import pytest

from wsi_hcc.utils.atomic import atomic_write_csv, csv_bytes


def test_rows_as_sequences_or_mappings_give_the_same_table(tmp_path):
    header = ["slide", "p_hcc", "reason"]
    assert csv_bytes(header, [["a", 0.5, ""], ["b, c", 1, "x"]]) == b'slide,p_hcc,reason\na,0.5,\n"b, c",1,x\n'
    assert csv_bytes(header, [{"slide": "a", "p_hcc": 0.5}, {"slide": "b, c", "p_hcc": 1, "reason": "x"}]) == \
        b'slide,p_hcc,reason\na,0.5,\n"b, c",1,x\n'
    assert csv_bytes(header, [], lineterminator="\r\n") == b"slide,p_hcc,reason\r\n"
    with pytest.raises(ValueError, match="fields not in fieldnames"):
        csv_bytes(["slide"], [{"slide": "a", "seconds": 1}])
    assert csv_bytes(["slide"], [{"slide": "a", "seconds": 1}], ignore_extra=True) == b"slide\na\n"
    atomic_write_csv(tmp_path / "t.csv", header, [["a", 1, ""]])
    assert (tmp_path / "t.csv").read_bytes() == b"slide,p_hcc,reason\na,1,\n"
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".*"))
