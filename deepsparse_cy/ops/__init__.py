"""Operator implementations, one module per family, registered by name and opset.

Every module in this package is imported here so its @register decorators run; modules whose
name starts with an underscore are private helpers and are not auto-imported. Fast kernels
(`deepsparse_cy.kernels`) override references by registering after them (modules named
`fast_*` are imported last).
"""
import importlib
import pkgutil

from .registry import Op, OpContext, register, registered_ops, resolve, store  # noqa: F401

_names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")
                and m.name != "registry")
for _n in [n for n in _names if not n.startswith("fast_")] + [n for n in _names if n.startswith("fast_")]:
    importlib.import_module(f"{__name__}.{_n}")
