"""A stage as a dask worker runs it (wsi_hcc.pipelines.cluster._run_stage), without a cluster."""

import logging

from wsi_hcc.pipelines.cluster import _run_stage
from wsi_hcc.tiling.inputs import SlideTask


class _TwoStages:
    stages = ("tile", "classify")

    def run(self, stage, task, *earlier):
        return f"{stage} of {task.stem}"


def test_a_worker_stage_quiets_tifffile_as_the_cli_does_unless_set(monkeypatch):
    log = logging.getLogger("tifffile")
    monkeypatch.setattr(log, "level", logging.NOTSET)
    assert _run_stage(_TwoStages(), "tile", SlideTask("a.svs", "a")) == "tile of a"
    assert log.level == logging.CRITICAL  # a damaged slide is the slide's one-line row, not a worker log
    log.setLevel(logging.DEBUG)  # wsi-hcc -vv in this process: left as set
    _run_stage(_TwoStages(), "tile", SlideTask("a.svs", "a"))
    assert log.level == logging.DEBUG
