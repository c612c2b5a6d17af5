"""`delphi dynamics`: what changed inside each model between checkpoints.

`metrics.py` the numbers (norms, condition, effective rank, sparsity, distance, CKA) as plain functions
on tensors; `components.py` names each parameter as (layer, component); `probe.py` the fixed batch of
sequences every checkpoint is measured on; `measure.py` one checkpoint's weights, gradients and
activations; `table.py` every checkpoint of every run, resumable, into one tidy table; `plot.py` a metric
against tokens seen per layer.
"""
