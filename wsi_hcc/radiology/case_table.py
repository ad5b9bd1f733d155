"""A CSV of labelled cases (images, tumour and liver masks on disk) -> the cohort records the classifiers train on.

Columns (one row per case; paths relative to the CSV's folder, or absolute):

- ``case``: case id (unique); ``label``: the class (MVI: ``0``/``1`` or a class name; grade: a
  class name only, since a number is ambiguous between index and histological grade); the names are
  the model's (``no_mvi``/``mvi``; ``well``/``moderate``/``poor``) or, in the same order, those given
  as ``classes``;
- ``patient`` (optional): splits keep a patient's cases together;
- ``image:<phase>`` (CT), ``image:CT:<phase>``, ``image:MR:<phase>``: one column per channel
  (crops' ``"MODALITY:phase"`` names), every cell filled (a case without a phase is an error, not a
  silently zero channel); the fusion model pairs CT and MR of the same phases, the other kinds read
  the CT columns (and ignore MR ones);
- ``tumour``: mask or label map; ``tumour_label`` (optional, int): the tumour's value (default any non-zero);
- ``liver``, ``liver_label`` (optional): liver mask or label map, and its value;
- ``diameter_mm``, ``heterogeneity``, ``satellites`` (optional, numbers): radiological attributes,
  the TED model's first-stage targets (it needs the last two; the diameter is measured from the
  tumour mask when absent);
- the clinical covariates named in ``covariates`` (numbers), for the graph model's nomogram.

Reading (``read_case_table``) checks the table and that every file exists, for every row, before
any image is loaded; loading (``table_cohort``) reads each case with ``load_volume`` and crops it as
the phantoms are (``cohort.volume_case`` -> ``crops.make_crop``, which resamples every phase from
its own grid onto the crop grid in physical space, so phases need no common grid, only a common
frame of reference). Every problem is a one-line ``WsiHccError`` naming the CSV line or file and the fix.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology.cohort import ATTRIBUTES, CohortCase, volume_case
from wsi_hcc.radiology.crops import CropSpec, channel_name, split_channel
from wsi_hcc.radiology.load import load_volume
from wsi_hcc.radiology.volume import Volume
from wsi_hcc.utils.progress import Progress, silent_progress

__all__ = ["CaseRow", "CaseTable", "read_case_table", "check_table_for_model", "load_case", "table_cohort",
           "IMAGE_PREFIX"]

IMAGE_PREFIX = "image:"
_REQUIRED = ("case", "label", "tumour")
_MODALITIES = ("CT", "MR")


@dataclass(frozen=True)
class CaseRow:
    """One validated row: label as a class index, image paths per channel (``"CT:portal"``)."""

    case_id: str
    line: int
    label: int
    images: dict[str, Path]
    tumour: Path
    tumour_label: int | None = None
    liver: Path | None = None
    liver_label: int | None = None
    patient: str | None = None
    attributes: dict[str, float] = field(default_factory=dict)
    covariates: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CaseTable:
    """A validated case table: its rows, channels (column order), task, class names and covariates."""

    path: Path
    task: str
    classes: tuple[str, ...]
    model_classes: tuple[str, ...]
    channels: tuple[str, ...]
    covariates: tuple[str, ...]
    rows: tuple[CaseRow, ...]
    sha256: str

    @property
    def phases(self) -> tuple[str, ...]:
        """Phase names in column order, each once (over the modalities)."""
        return tuple(dict.fromkeys(split_channel(c)[1] for c in self.channels))

    def model_phases(self, model: str) -> tuple[str, ...]:
        """The phases a model kind trains on by default: every phase for fusion, the CT phases otherwise
        (CT-only kinds ignore MR columns)."""
        return self.phases if model == "fusion" else (self.phases_of("CT") or self.phases)

    def phases_of(self, modality: str) -> tuple[str, ...]:
        return tuple(p for m, p in map(split_channel, self.channels) if m == modality)

    def where(self, row: CaseRow) -> str:
        return f"{self.path.name} line {row.line}"

    def describe(self) -> dict:
        """JSON-ready description for the run's ``metrics.json`` (``cohort``)."""
        counts = np.bincount([r.label for r in self.rows], minlength=len(self.classes)).tolist()
        return {"source": "case_table", "csv": str(self.path), "csv_sha256": self.sha256, "cases": len(self.rows),
                "patients": len({r.patient or r.case_id for r in self.rows}), "channels": list(self.channels),
                "classes": {"csv": list(self.classes), "model": list(self.model_classes)},
                "class_counts": dict(zip(self.model_classes, counts)), "covariates": list(self.covariates)}


def _task_classes(task: str) -> tuple[str, ...]:
    from wsi_hcc.radiology.classify_train import TASK_CLASSES

    if task not in TASK_CLASSES:
        raise WsiHccError(f"task {task!r} is not one of {sorted(TASK_CLASSES)}")
    return tuple(TASK_CLASSES[task])


def _channel_of(column: str, csv_name: str) -> str:
    modality, phase = split_channel(column[len(IMAGE_PREFIX):])
    if modality not in _MODALITIES or not phase or ":" in phase:
        raise WsiHccError(f"{csv_name}: column {column!r} is not image:PHASE, image:CT:PHASE or image:MR:PHASE; "
                          "rename it")
    return channel_name(modality, phase)


def _int_cell(value: str, column: str) -> int | None:
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{column} {value!r} is not an integer; write the mask's label value, e.g. 2") from None


def _number_cell(value: str, column: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{column} {value!r} is not a number") from None
    if not np.isfinite(number):
        raise ValueError(f"{column} {value!r} is not a finite number")
    return number


def _label_index(value: str, classes: Sequence[str], numeric: bool) -> int:
    if value in classes:
        return list(classes).index(value)
    if numeric:
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None and number.is_integer() and 0 <= number < len(classes):
            return int(number)
    allowed = ", ".join([*(["0", "1"] if numeric else []), *classes])
    raise ValueError(f"label {value!r} is not one of {allowed}; fix the label or give the CSV's class names "
                     "with --classes (in the model's class order)")


def _path_cell(value: str, column: str, folder: Path) -> Path:
    if not value:
        raise ValueError(f"{column} is empty; every case needs it (remove the case or fill in the path)")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else folder / path
    if not path.exists():
        raise ValueError(f"{column} file {value} not found ({path}); fix the path (relative to the CSV's folder)")
    return path


def _read_row(record: dict[str, str], line: int, channels: dict[str, str], classes: Sequence[str], numeric: bool,
              covariates: Sequence[str], folder: Path) -> CaseRow:
    cell = {k: (v or "").strip() for k, v in record.items() if k is not None}
    case_id = cell["case"]
    if not case_id:
        raise ValueError("case is empty; give every case an id")
    images = {}
    for column, channel in channels.items():
        if not cell[column]:
            raise ValueError(f"{column} is empty; every case needs every phase column filled (remove the case, "
                             "or the column for all cases)")
        images[channel] = _path_cell(cell[column], column, folder)
    liver = _path_cell(cell["liver"], "liver", folder) if cell.get("liver") else None
    attributes = {a: _number_cell(cell[a], a) for a in ATTRIBUTES if cell.get(a)}
    values = {}
    for name in covariates:
        if not cell[name]:
            raise ValueError(f"covariate {name} is empty; fill it in or drop it from --covariates")
        values[name] = _number_cell(cell[name], f"covariate {name}")
    return CaseRow(case_id=case_id, line=line, label=_label_index(cell["label"], classes, numeric), images=images,
                   tumour=_path_cell(cell["tumour"], "tumour", folder),
                   tumour_label=_int_cell(cell.get("tumour_label", ""), "tumour_label"), liver=liver,
                   liver_label=_int_cell(cell.get("liver_label", ""), "liver_label"),
                   patient=cell.get("patient") or None, attributes=attributes, covariates=values)


def read_case_table(path: str | Path, task: str, classes: Sequence[str] | None = None,
                    covariates: Sequence[str] = ()) -> CaseTable:
    """Read and check a case table (see the module docstring); no image is loaded.

    Parameters
    ----------
    path
        The CSV file.
    task
        ``"mvi"`` or ``"grade"``: which classes the labels name.
    classes
        The CSV's class names, in the model's class order (default: the model's names).
    covariates
        Columns read as clinical covariates (numbers, every row).

    Raises
    ------
    WsiHccError
        On the first problem, naming the CSV line and the fix (and how many further rows have problems).
    """
    path = Path(path)
    model_classes = _task_classes(task)
    classes = tuple(c.strip() for c in classes) if classes else model_classes
    if len(classes) != len(model_classes) or len(set(classes)) != len(classes) or not all(classes):
        raise WsiHccError(f"--classes {','.join(classes)}: the {task} model has {len(model_classes)} classes "
                          f"({', '.join(model_classes)}); give {len(model_classes)} distinct names in that order")
    if not path.is_file():
        raise WsiHccError(f"{path}: no such case table; give a CSV file with columns case, label, image:PHASE, tumour")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise WsiHccError(f"{path}: not UTF-8 text; save the case table as a UTF-8 CSV") from None
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in reader.fieldnames or []]
    reader.fieldnames = columns
    missing = [c for c in _REQUIRED if c not in columns]
    image_columns = [c for c in columns if c.startswith(IMAGE_PREFIX)]
    if not image_columns:
        missing.append("image:PHASE (e.g. image:portal)")
    missing += [c for c in covariates if c not in columns]
    if missing:
        raise WsiHccError(f"{path}: missing column(s) {', '.join(missing)} (found {', '.join(columns) or 'none'}); "
                          "add them (see wsi-hcc radiology train --help)")
    channels = {c: _channel_of(c, path.name) for c in image_columns}
    repeated = sorted({ch for ch in channels.values() if list(channels.values()).count(ch) > 1})
    if repeated:
        raise WsiHccError(f"{path}: channel(s) {repeated} appear in two columns (image:PHASE is image:CT:PHASE); "
                          "keep one column each")
    rows, problems, seen = [], [], {}
    for record in reader:
        line = reader.line_num
        if not any((v or "").strip() for k, v in record.items() if k is not None):
            continue
        try:
            row = _read_row(record, line, channels, classes, task == "mvi", covariates, path.parent)
        except ValueError as exc:
            problems.append(f"{path.name} line {line}: {exc}")
            continue
        if row.case_id in seen:
            problems.append(f"{path.name} line {line}: case {row.case_id} repeats line {seen[row.case_id]}; "
                            "give each case a unique id")
        seen.setdefault(row.case_id, line)
        rows.append(row)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s) in other rows)" if len(problems) > 1 else ""
        raise WsiHccError(problems[0] + more)
    if not rows:
        raise WsiHccError(f"{path}: no cases; add one row per case")
    return CaseTable(path=path, task=task, classes=classes, model_classes=model_classes,
                     channels=tuple(channels.values()), covariates=tuple(covariates), rows=tuple(rows),
                     sha256=hashlib.sha256(data).hexdigest())


def check_table_for_model(table: CaseTable, model: str, channels: Sequence[str]) -> None:
    """Check that the table gives what the model kind needs, before anything is loaded.

    ``channels`` are the model's input channels (``TrainConfig.channels()``).
    """
    from wsi_hcc.radiology.classify_train import COVARIATES

    name = table.path.name
    unused = [c for c in table.covariates if c not in COVARIATES]
    if unused:
        raise WsiHccError(f"--covariates {', '.join(unused)}: the graph model's nomogram takes "
                          f"{', '.join(COVARIATES)} only; drop the others")
    if model == "fusion":
        ct, mr = set(table.phases_of("CT")), set(table.phases_of("MR"))
        if not ct or not mr or ct != mr:
            raise WsiHccError(f"{name}: the fusion model pairs CT and MR of the same phases; the columns give CT "
                              f"{sorted(ct)} and MR {sorted(mr)}: add image:CT:PHASE and image:MR:PHASE columns "
                              "for the same phases")
    elif not table.phases_of("CT"):
        raise WsiHccError(f"{name}: the {model} model reads CT phases and the table has MR columns only; add "
                          "image:CT:PHASE columns, or train --model fusion on CT and MR")
    absent = [c for c in channels if c not in table.channels]
    if absent:
        raise WsiHccError(f"{name}: the {model} model needs column(s) "
                          f"{', '.join(IMAGE_PREFIX + c for c in absent)}; add them or choose other --phase values")
    if model == "graph" and table.task == "mvi":
        lacking = [c for c in COVARIATES if c != "diameter_mm" and c not in table.covariates]
        if lacking:
            raise WsiHccError(f"{name}: the graph model's nomogram needs covariate column(s) {', '.join(lacking)}; "
                              f"add them and list them with --covariates {' '.join(lacking)}")
    if model == "ted":
        for row in table.rows:
            lacking = [a for a in ATTRIBUTES if a != "diameter_mm" and a not in row.attributes]
            if lacking:
                raise WsiHccError(f"{table.where(row)}: the ted model trains on radiological attributes; fill in "
                                  f"column(s) {', '.join(lacking)} (heterogeneity 0-1, satellite count) for every case")


def _mask(volume: Volume, label: int | None) -> np.ndarray:
    array = np.asarray(volume.array)
    return array == label if label is not None else array != 0


def load_case(table: CaseTable, row: CaseRow, channels: Sequence[str], spec: CropSpec = CropSpec()) -> CohortCase:
    """Load one row's channels and masks and crop them into a case (``cohort.volume_case``)."""
    where = table.where(row)
    loaded: dict[tuple[Path, str | None], Volume] = {}

    def read(path: Path, modality: str | None) -> Volume:
        key = (path, modality)
        if key not in loaded:
            try:
                loaded[key] = load_volume(path, modality=modality)
            except WsiHccError as exc:
                raise WsiHccError(f"{where}: {exc}") from None
        return loaded[key]

    tumour_volume = read(row.tumour, None)
    tumour = _mask(tumour_volume, row.tumour_label)
    if not tumour.any():
        which = f"label {row.tumour_label}" if row.tumour_label is not None else "any non-zero value"
        raise WsiHccError(f"{where}: the tumour mask {row.tumour} is empty ({which}); fix the mask or tumour_label")
    liver = None
    if row.liver is not None:
        liver_mask = _mask(read(row.liver, None), row.liver_label)
        if not liver_mask.any():
            raise WsiHccError(f"{where}: the liver mask {row.liver} is empty; fix the mask or liver_label, or leave "
                              "liver blank")
        liver = read(row.liver, None).with_array(liver_mask)
    centre_lps = tumour_volume.with_array(tumour).mask_centre_lps()
    images = {}
    for channel in channels:
        modality, _ = split_channel(channel)
        image = read(row.images[channel], modality)
        if not image.contains_lps(centre_lps):
            raise WsiHccError(f"{where}: {IMAGE_PREFIX}{channel} ({row.images[channel]}) does not contain the "
                              "tumour's centre; the image and the mask must share a frame of reference "
                              "(register or re-export them)")
        images[channel] = image
    task_label = {"mvi": row.label} if table.task == "mvi" else {"grade": row.label}
    return volume_case(row.case_id, images, tumour_volume.with_array(tumour), liver, spec, **task_label,
                       attributes=row.attributes, covariates=row.covariates, patient=row.patient)


def table_cohort(table: CaseTable, channels: Sequence[str], spec: CropSpec = CropSpec(),
                 progress: Progress | None = None) -> list[CohortCase]:
    """Every row of ``table`` loaded and cropped (``load_case``); the first bad case raises.

    ``progress`` (optional) hears one step per case.
    """
    missing = [c for c in channels if c not in table.channels]
    if missing:
        raise WsiHccError(f"{table.path.name}: no column(s) {', '.join(IMAGE_PREFIX + c for c in missing)}; add them")
    progress = progress or silent_progress()
    progress.steps_planned(len(table.rows), name="loading cases")
    cases = []
    for row in table.rows:
        cases.append(load_case(table, row, channels, spec))
        progress.steps_done(1)
    return cases
