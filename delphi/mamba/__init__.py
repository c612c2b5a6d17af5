"""Fast selective scans for transformers' `MambaForCausalLM` when mamba-ssm's CUDA kernels are absent.

`apply_scan_path(model, "auto")` plugs one into a model without changing its weights or config;
`delphi.models.build_model` does it for every Mamba recipe (recipe key `mamba_scan`).
`scan_paths_in_use(model)` says which scan actually ran, per device and dtype (for run records).
"""

from delphi.mamba.paths import (
    SCAN_PATHS,
    apply_scan_path,
    check_scan_path,
    missing_requirement,
    resolve_scan_path,
    scan_function,
    scan_path_of,
    scan_paths_in_use,
)

__all__ = [
    "SCAN_PATHS",
    "apply_scan_path",
    "check_scan_path",
    "missing_requirement",
    "resolve_scan_path",
    "scan_function",
    "scan_path_of",
    "scan_paths_in_use",
]
