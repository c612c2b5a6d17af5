"""The recipe's `mamba_scan` choices (what each means: `delphi.mamba.paths`)."""

SCAN_PATHS = ("auto", "cuda-kernels", "triton", "chunked", "mambapy", "reference")
