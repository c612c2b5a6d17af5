"""delphi: standardized, reproducible training of suites of small language models."""

__version__ = "0.1.0"
