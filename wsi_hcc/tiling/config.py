"""The tiling config: validated and frozen; YAML files in ``configs/``, overridden by command-line flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from wsi_hcc.errors import ConfigError
from wsi_hcc.tiling.tissue import TissueParams
from wsi_hcc.utils.config import first_error, locate_config

__all__ = ["TileConfig", "load_config"]


class TileConfig(BaseModel):
    """Everything that decides what ``wsi-hcc tile`` writes.

    Attributes
    ----------
    target_mpp : float
        Microns per pixel of the stored tiles.
    tile_px, overlap_px : int
        Tile edge and neighbour overlap in output pixels.
    min_tissue : float
        Fraction of a tile that must be tissue for it to be kept; 0 keeps every tile of the grid.
    backend : str
        ``auto``, ``openslide`` or ``tiffslide``.
    direct_jpeg : bool
        Decode JPEG-tiled TIFF levels directly (same pixels, faster); off reads through the backend.
    resample : str
        How tiles coarser than a JPEG level are made: ``scaled`` (default) decodes the JPEG tiles at
        1/2, 1/4 or 1/8 scale inside libjpeg-turbo's inverse DCT where that leaves a whole factor,
        finished with block means (about half a grey level from ``exact``; elsewhere the same pixels
        as ``exact``); ``exact`` decodes in full and averages (area interpolation only).
    pass_through : bool
        Where the grid coincides with the slide's own JPEG tiles, store their bytes unchanged (no
        decode, no re-encode, no generation loss).
    compression, jpeg_quality, jpeg_subsampling
        Tile codec: ``jpeg`` (default), ``zstd`` or ``none`` (both lossless). JPEG keeps full
        chroma (``444``) by default; ``420`` halves chroma both ways (smaller, colour blurred).
    normalize : str
        Stain normalisation applied to tiles as they are written: ``none``, ``macenko`` or
        ``reinhard`` (fitted to ``reference``, an RGB image of well-stained tissue).
    job_tiles : int
        Tiles per unit of work (rounded up to whole chunks); fixed so outputs do not depend on the
        number of workers.
    chunk_tiles : int
        Tiles per chunk file of the store: one file per tile would make file creation cost as much
        as a core (``wsi_hcc.store.tile_pack``).
    h5, qc : bool
        Also write a coordinate file for CLAM/TRIDENT; write the QC picture.
    h5_layout : str
        The coordinate file's layout: ``flat`` (``<stem>.h5`` beside the store), ``trident`` or
        ``clam`` (drop-in files for that tool; see ``wsi_hcc.store.tool_layouts``).
    tissue : TissueParams
        Tissue detection settings.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_mpp: float = Field(0.5, gt=0, le=100)
    tile_px: int = Field(256, ge=8, le=8192)
    overlap_px: int = Field(0, ge=0)
    min_tissue: float = Field(0.5, ge=0, le=1)
    backend: Literal["auto", "openslide", "tiffslide"] = "auto"
    direct_jpeg: bool = True
    resample: Literal["exact", "scaled"] = "scaled"
    pass_through: bool = True
    compression: Literal["jpeg", "zstd", "none"] = "jpeg"
    jpeg_quality: int = Field(90, ge=1, le=100)
    jpeg_subsampling: Literal["444", "422", "420"] = "444"
    normalize: Literal["none", "macenko", "reinhard"] = "none"
    reference: str | None = None
    job_tiles: int = Field(512, ge=1)
    chunk_tiles: int = Field(32, ge=1, le=4096)  # wsi_hcc.store.patch_store.CHUNK_TILES
    h5: bool = False
    h5_layout: Literal["flat", "trident", "clam"] = "flat"
    qc: bool = True
    tissue: TissueParams = TissueParams()

    @field_validator("jpeg_subsampling", mode="before")
    @classmethod
    def _subsampling_as_text(cls, value: Any) -> Any:
        # YAML reads an unquoted 444 as a number
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    def with_overrides(self, **overrides: Any) -> TileConfig:
        """A copy with the given non-None fields replaced (validated again)."""
        data = self.model_dump() | {k: v for k, v in overrides.items() if v is not None}
        return _validate(data, "command-line options", names=_FLAGS)


# settings by the flag a user typed, for messages about command-line values
_FLAGS = {"target_mpp": "--mpp", "tile_px": "--tile-px", "overlap_px": "--overlap-px", "min_tissue": "--min-tissue",
          "jpeg_quality": "--jpeg-quality"}


def _validate(data: dict[str, Any], where: str, names: dict[str, str] | None = None) -> TileConfig:
    try:
        config = TileConfig.model_validate(data)
    except ValidationError as exc:
        field, message = first_error(exc)
        field = (names or {}).get(field, field)
        raise ConfigError(f"{where}: {message if message.startswith(field) else f'{field}: {message}'}") from None
    if config.normalize != "none" and not config.reference:
        raise ConfigError(f"{where}: normalize={config.normalize} needs a reference image (--reference IMAGE)")
    if config.overlap_px >= config.tile_px:
        raise ConfigError(f"{where}: overlap_px ({config.overlap_px}) must be smaller than tile_px ({config.tile_px})")
    return config


def load_config(path: str | Path | None) -> TileConfig:
    """Load and validate a tile config from YAML; None gives the defaults."""
    import yaml

    if path is None:
        return TileConfig()
    path = locate_config(path, "tile", "")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; pass a YAML config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; pass a YAML config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    data = data.get("tile", data)
    return _validate(data, str(path))
