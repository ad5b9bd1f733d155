"""Config sections from YAML files, validated with pydantic, each failure one line naming the file and the fix.

The configs shipped with wsi-hcc (the repository's ``configs/``, installed as ``wsi_hcc/configs``) can be
named without a path: ``train/resnet34_hcc`` or ``configs/train/resnet34_hcc.yaml`` finds the shipped
file from any folder; a file that exists at the given path always wins.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from wsi_hcc.errors import ConfigError

__all__ = ["read_config_section", "with_dotted_overrides", "validate_section", "first_error", "locate_config",
           "shipped_configs_root", "shipped_config_names", "config_reference"]


def shipped_configs_root() -> Path | None:
    """The folder of shipped configs: ``wsi_hcc/configs`` in an installed wheel, else the ``configs/``
    of the source checkout this package runs from (an editable install); None when neither exists."""
    installed = Path(str(resources.files("wsi_hcc"))) / "configs"
    if installed.is_dir():
        return installed
    checkout = Path(__file__).resolve().parents[2] / "configs"
    return checkout if checkout.is_dir() else None


def shipped_config_names(folder: str | None = None) -> list[str]:
    """Names of the shipped configs under ``folder`` (``train``: ``train/resnet34_hcc``, ...); ``""``: the
    top-level ones (``tile``); None: all."""
    root = shipped_configs_root()
    if root is None or not (root / (folder or "")).is_dir():
        return []
    found = (root / folder).glob("*.yaml") if folder == "" else (root / (folder or "")).rglob("*.yaml")
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in found)


def _offer(folder: str, kind: str, form: str) -> str:
    names = shipped_config_names(folder)
    return form.format(kind=kind, names=", ".join(names)) if names else ""


def _shipped(name: str) -> Path | None:
    root = shipped_configs_root()
    if root is None:
        return None
    name = name.replace("\\", "/").removeprefix("./").removeprefix("configs/")
    if Path(name).is_absolute() or ".." in Path(name).parts:
        return None
    candidate = root / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    return candidate if candidate.is_file() else None


def locate_config(path: str | Path, kind: str, folder: str) -> Path:
    """The config file ``path`` names: the file itself where it exists, else the shipped config of that
    name (``train/resnet34_hcc``); a one-line error naming the shipped ones when neither exists.

    ``kind`` names the config in messages ("training"); ``folder`` is where its shipped examples live
    (``train``).
    """
    given = Path(path)
    if given.exists():
        return given
    shipped = _shipped(str(path))
    if shipped is not None:
        return shipped
    offer = _offer(folder, kind, "; shipped {kind} configs: {names}")
    raise ConfigError(f"{path}: {kind} config not found; give a YAML file's path or a shipped name{offer}")


def config_reference(value: str, config_file: str | Path, kind: str, folder: str) -> Path:
    """A config named inside another config (a training config's augmentation file): relative to the
    folder of ``config_file``, not the working directory; else a shipped name. Returned absolute."""
    candidate = (Path(config_file).resolve().parent / value).resolve()
    if candidate.is_file():
        return candidate
    shipped = _shipped(value)
    if shipped is not None:
        return shipped.resolve()
    offer = _offer(folder, kind, " or a shipped name ({names})")
    raise ConfigError(f"{config_file}: {kind} config {value} not found next to it ({candidate}); give a path "
                      f"relative to {Path(config_file).name}{offer}")


def read_config_section(path: str | Path, key: str, kind: str, example: str) -> Any:
    """The ``key:`` section of a YAML config file, or a one-line error naming the file and the fix.

    ``kind`` names the config in messages ("training"); ``example`` is a file to point users to.
    """
    import yaml

    folder = str(Path(example).parent)
    path = locate_config(path, kind, folder.removeprefix("configs/"))
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {kind} config not found; see {folder}/ for examples") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; pass a YAML file such as {example}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the {kind} config ({exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or key not in data:
        raise ConfigError(f"{path}: expected a top-level '{key}:' mapping (see {folder}/)")
    return data[key]


def with_dotted_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``data`` with each non-None override set; dotted names (``optimizer.lr``) reach nested settings."""
    for key, value in overrides.items():
        if value is None:
            continue
        target = data
        *parents, leaf = key.split(".")
        for part in parents:
            target = target[part]
        target[leaf] = value
    return data


def validate_section(model: type[BaseModel], data: Any, where: str, key: str, kind: str, folder: str):
    """``model`` validated from a config section, or a one-line error naming the setting and the fix."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {kind} settings under '{key}:'")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        kind_of_error = exc.errors()[0]["type"]
        field, message = first_error(exc)
        if kind_of_error == "extra_forbidden":
            message = f"unknown setting (check the spelling against {folder}/)"
        elif kind_of_error == "missing":
            message = "required setting is missing"
        raise ConfigError(f"{where}: {field or key}: {message}") from None


def first_error(exc: ValidationError) -> tuple[str, str]:
    """The dotted place and the message of a validation's first error, for a one-line report."""
    first = exc.errors()[0]
    return ".".join(str(p) for p in first["loc"]), first["msg"].removeprefix("Value error, ")
