"""Slide formats beyond scanner files: DICOM WSI folders, OME-TIFF physical sizes, PNG/JPEG region images."""

import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image

from wsi_hcc.errors import MppError, SlideError
from wsi_hcc.slide.info import describe_slide, slide_fingerprint
from wsi_hcc.slide.mpp import resolve_mpp
from wsi_hcc.slide.readers import open_slide
from wsi_hcc.slide.readers.tiff_probe import ome_xml_mpp


def write_ome_tiff(path, rgb, physical_size=None, unit=None, **options):
    """An OME-TIFF whose only resolution is OME-XML PhysicalSizeX/Y (tifffile writes the TIFF
    resolution tags as 1/1 with no unit)."""
    metadata = {"axes": "YXS"}
    if physical_size is not None:
        metadata |= {"PhysicalSizeX": physical_size, "PhysicalSizeY": physical_size}
    if unit is not None:
        metadata |= {"PhysicalSizeXUnit": unit, "PhysicalSizeYUnit": unit}
    tifffile.imwrite(path, rgb, photometric="rgb", metadata=metadata, **options)
    return path


def _ome(pixels: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
            f"{pixels}</OME>")


# --- OME-TIFF ---------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_ome_xml_physical_size_is_the_mpp(tmp_path, region_rgb, backend):
    path = write_ome_tiff(tmp_path / "region.ome.tif", region_rgb, 0.2527, "µm", tile=(256, 256))
    with tifffile.TiffFile(path) as tif:  # no usable TIFF resolution: only the OME-XML says it
        assert tif.is_ome and int(tif.pages.first.tags["ResolutionUnit"].value) == 1
    reader = open_slide(path, backend)
    assert reader.property_mpp() is None
    assert resolve_mpp(reader) == (0.2527, "ome-xml")
    info = describe_slide(reader)
    assert info.slide_mpp == 0.2527 and info.mpp_source == "ome-xml"


def test_ome_xml_unit_defaults_to_microns(tmp_path, region_rgb):
    path = write_ome_tiff(tmp_path / "nounit.ome.tif", region_rgb, 0.2527)
    assert resolve_mpp(open_slide(path)) == (0.2527, "ome-xml")


def test_override_still_wins_over_ome_xml(tmp_path, region_rgb):
    path = write_ome_tiff(tmp_path / "region.ome.tif", region_rgb, 0.2527, "µm")
    assert resolve_mpp(open_slide(path), 0.5) == (0.5, "override")


def test_ome_tiff_without_physical_size_names_the_override(tmp_path, region_rgb):
    path = write_ome_tiff(tmp_path / "bare.ome.tif", region_rgb)
    with pytest.raises(MppError, match="--slide-mpp"):
        resolve_mpp(open_slide(path))


@pytest.mark.parametrize(("size", "unit", "expected"), [
    ("252.7", "nm", 0.2527), ("0.0002527", "mm", 0.2527), ("2527", "Å", 0.2527), ("0.2527", "um", 0.2527),
    ("0.2527", "μm", 0.2527), ("0.5", None, 0.5),
])
def test_ome_xml_units(size, unit, expected):
    unit_attrs = f' PhysicalSizeXUnit="{unit}" PhysicalSizeYUnit="{unit}"' if unit else ""
    xml = _ome(f'<Image ID="Image:0"><Pixels PhysicalSizeX="{size}" PhysicalSizeY="{size}"{unit_attrs}>'
               '<TiffData IFD="0"/></Pixels></Image>')
    assert ome_xml_mpp(xml) == pytest.approx((expected, expected), rel=1e-12)


@pytest.mark.parametrize("pixels", [
    '<Pixels PhysicalSizeX="1" PhysicalSizeY="1" PhysicalSizeXUnit="pixel" PhysicalSizeYUnit="pixel"/>',
    '<Pixels PhysicalSizeX="0.25"/>',
    '<Pixels/>',
])
def test_ome_xml_without_a_length_gives_no_mpp(pixels):
    assert ome_xml_mpp(_ome(f'<Image ID="Image:0">{pixels}</Image>')) is None
    assert ome_xml_mpp("not xml <") is None


def test_ome_xml_takes_the_image_stored_from_ifd_0():
    label = '<Image ID="Image:0"><Pixels PhysicalSizeX="20" PhysicalSizeY="20"><TiffData IFD="3"/></Pixels></Image>'
    main = '<Image ID="Image:1"><Pixels PhysicalSizeX="0.2527" PhysicalSizeY="0.2527"><TiffData/></Pixels></Image>'
    assert ome_xml_mpp(_ome(label + main)) == (0.2527, 0.2527)


# --- PNG / JPEG region images -------------------------------------------------------------------

def test_png_region_image_is_a_one_level_slide(tmp_path, region_rgb):
    path = tmp_path / "region.png"
    Image.fromarray(region_rgb).save(path)
    reader = open_slide(path)
    assert reader.backend == "pillow" and reader.vendor == "png"
    assert reader.level_count == 1 and reader.dimensions == (800, 600) and reader.level_downsamples == (1.0,)
    np.testing.assert_array_equal(reader.read_region((100, 37), 0, (300, 200)), region_rgb[37:237, 100:400])
    # past the edge is white glass, as openslide renders it
    edge = reader.read_region((700, 550), 0, (200, 100))
    np.testing.assert_array_equal(edge[:50, :100], region_rgb[550:, 700:])
    assert (edge[50:] == 255).all() and (edge[:, 100:] == 255).all()


def test_png_without_mpp_fails_naming_the_override(tmp_path, region_rgb):
    path = tmp_path / "region.png"
    Image.fromarray(region_rgb).save(path)
    with pytest.raises(MppError, match="pass --slide-mpp") as info:
        resolve_mpp(open_slide(path))
    assert "\n" not in str(info.value)
    assert resolve_mpp(open_slide(path), 0.25) == (0.25, "override")


def test_png_phys_chunk_is_the_mpp(tmp_path, region_rgb):
    path = tmp_path / "region.png"
    Image.fromarray(region_rgb).save(path, dpi=(25400 / 0.2527, 25400 / 0.2527))  # pHYs in pixels per metre
    mpp, source = resolve_mpp(open_slide(path))
    assert source == "properties" and mpp == pytest.approx(0.2527, rel=1e-6)


def test_jpeg_jfif_density_is_the_mpp_and_pixels_are_pillows(tmp_path, region_rgb):
    path = tmp_path / "region.jpg"
    Image.fromarray(region_rgb).save(path, quality=95, dpi=(50800, 50800))  # JFIF in dots per inch
    reader = open_slide(path)
    assert reader.backend == "pillow" and reader.vendor == "jpeg"
    assert resolve_mpp(reader) == (0.5, "properties")
    np.testing.assert_array_equal(reader.read_region((0, 0), 0, (800, 600)), np.asarray(Image.open(path)))


@pytest.mark.parametrize(("unit", "expected"), [(3, (0.5, 0.5)), (2, (1.27, 1.27)), (1, None)])
def test_jpeg_exif_resolution_counts_only_in_inches_or_centimetres(tmp_path, region_rgb, unit, expected):
    exif = Image.Exif()
    exif[0x0128], exif[0x011A], exif[0x011B] = unit, 20000.0, 20000.0  # ResolutionUnit, X/YResolution
    path = tmp_path / "exif.jpg"
    Image.fromarray(region_rgb).save(path, exif=exif)  # its JFIF header is 1:1, an aspect ratio only
    mpp = open_slide(path).property_mpp()
    assert mpp == (pytest.approx(expected) if expected else None)


def test_jpeg_without_an_absolute_density_has_no_mpp(tmp_path, region_rgb):
    path = tmp_path / "camera.jpg"
    Image.fromarray(region_rgb).save(path)  # JFIF 1:1, an aspect ratio only
    assert open_slide(path).property_mpp() is None


def test_transparent_png_pixels_are_white_glass(tmp_path, region_rgb):
    rgba = np.dstack([region_rgb, np.full(region_rgb.shape[:2], 255, np.uint8)])
    rgba[:100, :, 3] = 0
    path = tmp_path / "cut-out.png"
    Image.fromarray(rgba).save(path)
    pixels = open_slide(path).read_region((0, 0), 0, (800, 600))
    assert (pixels[:100] == 255).all()
    np.testing.assert_array_equal(pixels[100:], region_rgb[100:])


def test_unreadable_png_is_one_line(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(SlideError) as info:
        open_slide(path)
    message = str(info.value)
    assert str(path) in message and "pillow cannot open it" in message and "\n" not in message


# --- DICOM WSI folders --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dicom_folder(tmp_path_factory, region_rgb, dicomize):
    root = tmp_path_factory.mktemp("dicom")
    source = root / "source.tif"
    tifffile.imwrite(source, region_rgb, photometric="rgb", tile=(256, 256),
                     resolution=(1e4 / 0.2527, 1e4 / 0.2527), resolutionunit="CENTIMETER")
    folder = root / "case-007"
    dicomize(source, folder)
    return folder


def test_dicom_folder_opens_as_one_slide(dicom_folder, region_rgb):
    reader = open_slide(dicom_folder)
    assert reader.backend == "openslide" and reader.vendor == "dicom" and reader.path == dicom_folder
    assert reader.dimensions == (800, 600) and reader.level_count >= 2
    np.testing.assert_array_equal(reader.read_region((0, 0), 0, (800, 600)), region_rgb)
    info = describe_slide(reader)
    assert info.path == str(dicom_folder.resolve()) and info.mpp_source == "properties"
    assert info.slide_mpp == pytest.approx(0.2527, rel=1e-9)


def test_dicom_folder_fingerprint_covers_every_file(dicom_folder, tmp_path):
    copy = shutil.copytree(dicom_folder, tmp_path / "copy")
    before = slide_fingerprint(copy)
    assert before == slide_fingerprint(dicom_folder) and before.startswith("sha256:")
    last = sorted(copy.iterdir())[-1]
    last.write_bytes(last.read_bytes() + b"\0")
    assert slide_fingerprint(copy) != before


def test_dicom_folder_is_openslide_only(dicom_folder):
    with pytest.raises(SlideError, match="read by openslide only"):
        open_slide(dicom_folder, "tiffslide")


def test_two_series_in_one_folder_is_one_line(dicom_folder, tmp_path, region_rgb, dicomize):
    source = tmp_path / "other.tif"
    tifffile.imwrite(source, region_rgb[:256, :256], photometric="rgb", tile=(256, 256),
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    mixed = shutil.copytree(dicom_folder, tmp_path / "mixed")
    dicomize(source, tmp_path / "second")
    for path in (tmp_path / "second").iterdir():
        shutil.copy(path, mixed / path.name)
    with pytest.raises(SlideError, match="holds 2 DICOM WSI series; put each series in its own folder") as info:
        open_slide(mixed)
    assert str(mixed) in str(info.value) and "\n" not in str(info.value)


def test_folder_of_non_wsi_dicom_is_one_line(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder = tmp_path / "ct"
    folder.mkdir()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.save_as(folder / "slice.dcm", enforce_file_format=True)
    with pytest.raises(SlideError, match="no whole-slide image"):
        open_slide(folder)


def test_folder_without_dicom_still_says_it_is_a_folder(tmp_path):
    with pytest.raises(SlideError, match="is a folder, not a slide"):
        open_slide(tmp_path)
