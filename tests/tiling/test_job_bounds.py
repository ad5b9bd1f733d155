"""How a slide's tiles are cut into jobs: whole chunks, full jobs, then halving jobs at the end."""

from hypothesis import given
from hypothesis import strategies as st

from wsi_hcc.tiling.slide_tiler import job_bounds


@given(n_tiles=st.integers(0, 20_000), job_tiles=st.integers(1, 2048), chunk_tiles=st.integers(1, 128))
def test_jobs_cover_every_tile_once_in_whole_chunks(n_tiles, job_tiles, chunk_tiles):
    bounds = job_bounds(n_tiles, job_tiles, chunk_tiles)
    step = -(-job_tiles // chunk_tiles) * chunk_tiles
    assert [lo for lo, _ in bounds] == [0, *(hi for _, hi in bounds)][:len(bounds)]  # contiguous, in order
    assert (bounds[-1][1] if bounds else 0) == n_tiles
    for lo, hi in bounds:
        assert 0 < hi - lo <= step
        assert lo % chunk_tiles == 0  # no two jobs write one chunk file
    sizes = [hi - lo for lo, hi in bounds]
    assert sizes == sorted(sizes, reverse=True)  # the big jobs first, the small ones last
    assert len(bounds) <= n_tiles // step + 2 * max(1, step // chunk_tiles).bit_length() + 2


def test_the_last_jobs_halve_down_to_one_chunk():
    sizes = [hi - lo for lo, hi in job_bounds(18_252, 512, 32)]
    assert sizes[:30] == [512] * 30
    assert sizes[-5:] == [448, 224, 96, 64, 12]  # so two workers finish within one small job of each other
