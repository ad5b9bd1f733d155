"""Config sections from YAML files, validated with pydantic, each failure one line naming the file and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from wsi_hcc.errors import ConfigError

__all__ = ["read_config_section", "with_dotted_overrides", "validate_section", "first_error"]


def read_config_section(path: str | Path, key: str, kind: str, example: str) -> Any:
    """The ``key:`` section of a YAML config file, or a one-line error naming the file and the fix.

    ``kind`` names the config in messages ("training"); ``example`` is a file to point users to.
    """
    import yaml

    path = Path(path)
    folder = str(Path(example).parent)
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
