"""The data stage, in pipeline order: the embedded corpus (`stories`, told from `plots`, `cast` and the
word lists in `words`), reading one split of a dataset (`splits`), the byte-level BPE (`tokenizer`),
documents -> fixed-length token sequences (`sequences`)."""
