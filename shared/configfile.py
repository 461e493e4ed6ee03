"""Reading a YAML configuration file with errors a person can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def load_yaml(path: str | Path, what: str, error: type[Exception]) -> Any:
    """The parsed document of ``path``; unreadable or invalid YAML raises ``error`` naming
    ``what`` (e.g. "price book") and the file."""
    p = Path(path)
    try:
        return yaml.safe_load(p.read_text())
    except OSError as e:
        raise error(f"cannot read {what} {p}: {e}") from e
    except yaml.YAMLError as e:
        raise error(f"{what} {p} is not valid YAML: {e}") from e
