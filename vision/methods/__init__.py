"""Vision methods by name: each a :class:`vision.train.Method` with a small config dataclass."""
from __future__ import annotations

from typing import Any

from curate.core.errors import BadInputError
from vision.methods.dpc import DPC, DPCConfig
from vision.methods.selcl import SelCL, SelCLConfig
from vision.train import Method

METHODS: dict[str, tuple[type, type | None]] = {"ce": (Method, None), "selcl": (SelCL, SelCLConfig),
                                                "dpc": (DPC, DPCConfig)}


def build_method(name: str, options: dict[str, Any] | None = None) -> Method:
    if name not in METHODS:
        raise BadInputError(f"unknown vision method '{name}'; choose one of {', '.join(METHODS)}")
    cls, config_cls = METHODS[name]
    options = dict(options or {})
    if config_cls is None:
        if options:
            raise BadInputError(f"method '{name}' takes no options, got {sorted(options)}")
        return cls()
    try:
        return cls(config_cls(**options))
    except TypeError as err:
        raise BadInputError(f"bad option for method '{name}': {err}") from err
