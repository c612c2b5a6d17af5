"""The data stage, in pipeline order: the embedded corpus (`stories`), reading a split (`splits`),
the byte-level BPE (`tokenizer`), documents -> fixed-length token sequences (`sequences`)."""
