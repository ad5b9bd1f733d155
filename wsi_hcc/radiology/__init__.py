"""Radiology volumes: read/write, resample, window, register phases, peritumoral rings, region features.

Arrays are ``(z, y, x)``, spacings in mm along the same axes, origins and directions in the DICOM
LPS patient frame (see ``wsi_hcc.radiology.volume``). Functions are pure on arrays or ``Volume``
records; file I/O lives in ``volume`` and ``dicom``.
"""

from wsi_hcc.radiology.dicom import is_dicom_seg, read_dicom_file, read_dicom_seg, read_dicom_series
from wsi_hcc.radiology.intensity import CT_WINDOWS, MRI_NORMALISATIONS, ct_window, mri_normalise, normalise_volume
from wsi_hcc.radiology.load import load_volume
from wsi_hcc.radiology.phantom import Phantom, PhantomLesion, make_phantom, write_phantom
from wsi_hcc.radiology.region_features import first_order_features, glcm_features, habitats, region_features
from wsi_hcc.radiology.register import Registration, apply_registration, register_phases, register_volume
from wsi_hcc.radiology.resample import reorient, resample_like, resample_to_spacing
from wsi_hcc.radiology.ring import peritumoral_ring, ring_sweep, signed_distance_mm
from wsi_hcc.radiology.volume import Volume, from_sitk, require_tumour_inside, save_nifti, to_sitk

__all__ = [
    "Volume", "load_volume", "save_nifti", "to_sitk", "from_sitk", "require_tumour_inside",
    "read_dicom_series", "read_dicom_file", "read_dicom_seg", "is_dicom_seg",
    "resample_to_spacing", "resample_like", "reorient",
    "CT_WINDOWS", "MRI_NORMALISATIONS", "ct_window", "mri_normalise", "normalise_volume",
    "Registration", "register_volume", "register_phases", "apply_registration",
    "peritumoral_ring", "ring_sweep", "signed_distance_mm",
    "first_order_features", "glcm_features", "habitats", "region_features",
    "Phantom", "PhantomLesion", "make_phantom", "write_phantom",
]
