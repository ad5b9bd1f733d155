"""One progress protocol: the batch and training stages report items and steps to it, the CLI
draws it with rich, and library callers that pass none hear nothing."""

import io

from rich.console import Console

from wsi_hcc.cli.progress import RichProgress
from wsi_hcc.pipelines.tile import run_tile
from wsi_hcc.tiling.config import TileConfig
from wsi_hcc.utils.progress import Progress, silent_progress


def test_a_tile_batch_reports_each_slide_as_an_item_of_tile_steps(synth_slide, tmp_path, recording_progress):
    config = TileConfig(target_mpp=0.5, tile_px=224, min_tissue=0, job_tiles=32)
    report = run_tile([synth_slide, tmp_path / "missing.svs"], tmp_path / "out", config, progress=recording_progress)
    assert recording_progress.of("item") == [(synth_slide.stem, 0, 2), ("missing", 1, 2)]
    n_tiles = report.outcomes[0].n_tiles
    assert n_tiles > 0 and recording_progress.of("planned") == [(n_tiles, 0, "")]
    assert sum(n for n, _ in recording_progress.of("steps")) == n_tiles
    assert len(recording_progress.of("finished")) == 2  # the failed slide ends its item too


def test_rich_progress_keeps_messages_and_warnings_off_a_terminal():
    console = Console(file=io.StringIO(), force_terminal=False, width=200)
    progress: Progress = RichProgress(console)
    with progress:
        progress.stage("tile")
        progress.item_started("a", 0, 2)
        progress.steps_planned(10)
        progress.steps_done(4, "loss 0.100")
        progress.steps_planned(5, name="validation")
        progress.steps_done(5)
        progress.item_finished(["a: mpp from the TIFF resolution"])
        progress.message("fold 0: 3 epochs")
    text = console.file.getvalue()
    assert "warning: a: mpp from the TIFF resolution" in text and "fold 0: 3 epochs" in text


def test_silent_progress_takes_every_call():
    progress = silent_progress()
    progress.stage("x")
    progress.item_started("a", 0, 1)
    progress.steps_planned(None, name="n")
    progress.steps_done(3, "s")
    progress.item_finished(("w",))
    progress.message("m")
