"""The bookkeeping every run shares: items that fail alone, state files that skip finished work,
manifests with provenance."""

import json

import pytest

from wsi_hcc.errors import WsiHccError
from wsi_hcc.utils.runs import SlideOutcome, StateFiles, one_line_reason, provenance, run_items, write_manifest


def test_a_failing_item_is_one_line_and_the_batch_goes_on(recording_progress):
    failed = []

    def run_one(name):
        if name == "bad":
            raise WsiHccError("bad.svs: not a slide; convert it")
        if name == "odd":
            raise ValueError("unexpected\nsecond line")
        return SlideOutcome(name, f"{name}.svs", "done", warnings=("w",) if name == "a" else ())

    outcomes = run_items(["a", "bad", "odd", "b"], run_one, recording_progress, name=str,
                         path=lambda name: f"{name}.svs", on_failure=lambda item, o: failed.append(item))
    assert [o.status for o in outcomes] == ["done", "failed", "failed", "done"]
    assert outcomes[1].reason == "bad.svs: not a slide; convert it"
    assert outcomes[2].reason == "odd.svs: ValueError: unexpected" and failed == ["bad", "odd"]
    assert recording_progress.of("item") == [("a", 0, 4), ("bad", 1, 4), ("odd", 2, 4), ("b", 3, 4)]
    assert recording_progress.of("finished") == [(("w",),), ((),), ((),), ((),)]


def test_an_interrupt_stops_the_batch(recording_progress):
    def run_one(name):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_items(["a", "b"], run_one, recording_progress, name=str, path=str)
    assert recording_progress.of("item") == [("a", 0, 2)]


def test_state_files_skip_only_what_was_done_the_same_way(tmp_path):
    states = StateFiles(tmp_path, ".state.json")
    assert states.finished("s1", digest="d1") is None
    states.write("s1", {"status": "done", "digest": "d1"})
    states.write("s2", {"status": "failed", "digest": "d1"})
    (tmp_path / "s3.state.json").write_text("{damaged")
    assert states.finished("s1", digest="d1")["finished"] and states.finished("s1", digest="d2") is None
    assert states.finished("s2", digest="d1") is None and states.finished("s3") is None
    assert not list(tmp_path.glob(".*partial"))


def test_a_manifest_records_provenance_and_every_item(tmp_path):
    outcomes = [SlideOutcome("a", "a.svs", "done"), SlideOutcome("b", "b.svs", "failed", "b.svs: broken")]
    write_manifest(tmp_path / "m.json", "tile", "2026-01-01T00:00:00Z", outcomes, workers=2)
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["command"] == "tile" and manifest["workers"] == 2 and manifest["versions"]["wsi-hcc"]
    assert manifest["summary"] == {"done": 1, "skipped": 0, "failed": 1}
    assert manifest["slides"][1] == {"stem": "b", "path": "b.svs", "status": "failed", "reason": "b.svs: broken"}
    assert manifest["finished"] >= manifest["started"]
    assert set(provenance(x=1)) == {"created", "versions", "x"}
    assert one_line_reason("c.svs", OSError("disk full")) == "c.svs: OSError: disk full"
