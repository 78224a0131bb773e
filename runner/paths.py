"""Where the Hydra config tree (``conf/``) lives. A leaf module: it imports nothing from hymarl.

``conf/`` stays at the repository root. A wheel ships it as the data package ``hymarl_conf``
(pyproject.toml maps ``hymarl_conf`` -> ``conf/``; a name that cannot clash with another top-level
``conf`` in site-packages). :func:`conf_dir` finds it in either place, so the CLI, ``compose_config``
and the error messages that list the options all read the same files.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

CONF_PACKAGE = "hymarl_conf"


@lru_cache(maxsize=1)
def conf_dir() -> Path:
    """The directory holding ``config.yaml`` and the config groups (``algo/``, ``env/``, ...).

    A source checkout (editable install, ``python -m runner`` in the repo) uses ``<repo>/conf``;
    an installed wheel uses the ``hymarl_conf`` package next to ``runner`` in site-packages."""
    source = Path(__file__).resolve().parent.parent / "conf"
    if (source / "config.yaml").is_file():
        return source
    spec = importlib.util.find_spec(CONF_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(location) / "config.yaml").is_file():
            return Path(location)
    raise FileNotFoundError(
        f"hymarl's config tree was not found: neither {source} nor an installed '{CONF_PACKAGE}' "
        "package holds config.yaml (reinstall hymarl: pip install .)"
    )
