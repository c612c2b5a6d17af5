"""The datasets of delphi's built-in lm-evaluation-harness tasks (`custom_dataset: !function ...` in the YAML
files beside this one). The harness calls each with the task's metadata (`--metadata` JSON, merged with the
YAML's) and dataset_kwargs as keyword arguments."""

from __future__ import annotations


def text_documents(dataset=None, split="validation", feature="story", size=None, **_):
    """One split of a text dataset as documents `{text}`; by default the embedded corpus' validation split as
    `delphi corpus` writes it (seed 0), its first `size` (default 200) stories."""
    import datasets

    if dataset is None:
        from delphi.data.stories import generate_stories

        texts = generate_stories(int(size or 200), 0, "validation")
    else:
        from delphi.data.splits import load_split, require_text_feature

        rows = load_split(str(dataset), split)
        require_text_feature(rows, feature, str(dataset))
        texts = rows[feature] if size is None else rows.select(range(min(int(size), len(rows))))[feature]
    return datasets.DatasetDict({"test": datasets.Dataset.from_dict({"text": list(texts)})})


def minimal_pairs(phenomenon=None, per_phenomenon=None, **_):
    """delphi's minimal pairs (`delphi.evaluate.minimal_pairs`) of one phenomenon (all where None), columns
    sentence_good, sentence_bad, phenomenon."""
    import datasets

    from delphi.evaluate.minimal_pairs import PER_PHENOMENON
    from delphi.evaluate.minimal_pairs import minimal_pairs as pairs

    rows = [r for r in pairs(int(per_phenomenon or PER_PHENOMENON)) if phenomenon in (None, r["phenomenon"])]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
