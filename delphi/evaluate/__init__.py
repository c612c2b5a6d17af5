"""Evaluation and analysis of trained suites: per-token logprobs, loss curves, token statistics, views.

- `sources`: where checkpoints live (a local run directory or a hub model repo with `step*` branches)
- `logprobs`: next-token log-probabilities of every token of a dataset, for every checkpoint
- `curves`: validation loss against tokens seen, from checkpoint metadata, as a PNG and a CSV
- `analysis`: statistics of logprobs over groups of token ids, and an HTML view of a sequence
"""
