"""A slide's microns per pixel: read, checked, and never guessed."""

from __future__ import annotations

from wsi_hcc.errors import MppError
from wsi_hcc.slide.readers.base import SlideReader
from wsi_hcc.slide.readers.tiff_probe import probe_tiff

__all__ = ["resolve_mpp", "check_mpp", "MIN_PLAUSIBLE_MPP", "MAX_PLAUSIBLE_MPP"]

# Scanners run from ~0.1 um/px (100x) to ~10 um/px (1x overviews); outside that the number is a
# unit mix-up (inches, nanometres) rather than a resolution.
MIN_PLAUSIBLE_MPP = 0.05
MAX_PLAUSIBLE_MPP = 20.0
_XY_TOLERANCE = 0.01
_OVERRIDE_HINT = "pass --slide-mpp, or an mpp column in a CSV manifest"


def check_mpp(mpp: float, where: str) -> float:
    """Return ``mpp`` if plausible, else raise MppError naming ``where`` it came from."""
    if not (MIN_PLAUSIBLE_MPP <= mpp <= MAX_PLAUSIBLE_MPP):
        # an override that is itself wrong needs correcting, not another override
        hint = {"override": "correct --slide-mpp (um per level-0 pixel: about 0.25 at 40x, 0.5 at 20x)",
                "manifest": "correct the mpp column of the CSV manifest"}.get(where, _OVERRIDE_HINT)
        raise MppError(f"implausible mpp {mpp:g} um/px from {where} (expected {MIN_PLAUSIBLE_MPP}"
                       f"-{MAX_PLAUSIBLE_MPP}); {hint}")
    return float(mpp)


def _isotropic(mpp_xy: tuple[float, float], where: str) -> float:
    mpp_x, mpp_y = mpp_xy
    if abs(mpp_x - mpp_y) > _XY_TOLERANCE * max(mpp_x, mpp_y):
        raise MppError(f"non-square pixels ({mpp_x:g} x {mpp_y:g} um) from {where}; {_OVERRIDE_HINT}")
    return check_mpp((mpp_x + mpp_y) / 2, where)


def resolve_mpp(reader: SlideReader, override: float | None = None,
                override_source: str = "override") -> tuple[float, str]:
    """Level-0 microns per pixel of a slide and where it came from.

    Order: an explicit override (``--slide-mpp`` or a manifest's ``mpp`` column), the backend's
    metadata, an OME-TIFF's OME-XML ``PhysicalSizeX/Y`` (with their units), then the TIFF resolution
    tags. Nothing else: a slide without any of them fails.

    Returns
    -------
    (slide_mpp, mpp_source)
        ``mpp_source`` is ``override_source``, ``"properties"``, ``"ome-xml"`` or ``"tiff-resolution"``.

    Raises
    ------
    MppError
        When there is no mpp, or it is implausible; the message names the override.
    """
    if override is not None:
        return check_mpp(float(override), override_source), override_source
    from_props = reader.property_mpp()
    if from_props is not None:
        return _isotropic(from_props, f"{reader.backend} properties"), "properties"
    facts = probe_tiff(reader.path)
    # OME-XML before the TIFF tags: it names its unit, while OME writers often leave the tags as
    # unit-less placeholders
    if facts is not None and facts.ome_mpp is not None:
        return _isotropic(facts.ome_mpp, "OME-XML PhysicalSizeX/Y"), "ome-xml"
    if facts is not None and facts.resolution_mpp is not None:
        return _isotropic(facts.resolution_mpp, "TIFF resolution tags"), "tiff-resolution"
    raise MppError(f"no mpp in the slide's metadata, OME-XML or TIFF resolution tags; {_OVERRIDE_HINT}")
