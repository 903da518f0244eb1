"""Python side of the `deepsparse-cy` command line: each subcommand is a function here that
returns plain data (dicts), plus a format_* helper that renders what the CLI prints.

    from deepsparse_cy.tools import benchmark_model, profile_model, sparsify_model, check_hardware
    r = benchmark_model("zoo:bert-base-block4-pruned90-quant", time_s=5, compare=["onnxruntime"])
"""
from ._common import UsageError, parse_input_shapes  # noqa: F401
from .benchmark import benchmark_model, format_result  # noqa: F401
from .hardware import check_hardware, format_hardware  # noqa: F401
from .profile import format_profile, plot_profile, profile_model  # noqa: F401
from .sparsify import format_sparsify, sparsify_model  # noqa: F401

__all__ = ["benchmark_model", "profile_model", "sparsify_model", "check_hardware", "UsageError",
           "parse_input_shapes", "format_result", "format_profile", "format_sparsify",
           "format_hardware", "plot_profile"]
