"""Small tools every stage shares: atomic writes (files, JSON, CSV), library versions, the torch
device, checked model folders, YAML config sections, the progress protocol, the
bookkeeping of runs (outcomes, state files, manifests).
"""

from wsi_hcc.utils.lazy import lazy_exports

# each public name and the module that defines it, loaded on first use
_API = {
    "atomic_write_bytes": "atomic", "atomic_write_json": "atomic", "atomic_write_csv": "atomic",
    "csv_bytes": "atomic", "publish_dir": "atomic", "partial_path": "atomic", "fresh_partial_dir": "atomic",
    "WEIGHTS_NAME": "checked_weights", "CARD_NAME": "checked_weights", "save_checked": "checked_weights",
    "load_checked": "checked_weights", "read_card": "checked_weights",
    "model_folder_paths": "checked_weights", "check_file": "checked_weights",
    "file_sha256": "checked_weights",
    "read_config_section": "config", "with_dotted_overrides": "config", "validate_section": "config",
    "resolve_device": "devices",
    "LockHeld": "locks", "output_lock": "locks",
    "Progress": "progress", "silent_progress": "progress",
    "SlideOutcome": "runs", "BatchReport": "runs", "StateFiles": "runs", "run_items": "runs",
    "one_line_reason": "runs", "prepare_out_dir": "runs", "provenance": "runs", "write_manifest": "runs",
    "stack_versions": "versions", "utc_now": "versions",
    "counted": "words",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
