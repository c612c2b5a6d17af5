"""Load one split of a text (or token) dataset from a local dir, a local file, or a hub dataset id.

Everything downstream (tokenizer training, tokenization, training data) goes through
`load_split`, so every input that takes a path also takes a hub id, and split slicing
(`train[:10%]`, `validation[100:200]`) works the same way everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from delphi.errors import DelphiError
from delphi.inputs import check_local_or_hub

# datasets' packaged builders, by file suffix
_BUILDER_BY_SUFFIX = {
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".txt": "text",
}


def split_name(split: str) -> str:
    """`train[:10%]` -> `train`: the split's name without datasets' slicing syntax."""
    return split.split("[", 1)[0].strip()


def load_split(source: str | os.PathLike, split: str = "train", *, revision: str | None = None):
    """Return `datasets.Dataset` for one (optionally sliced) split of `source`.

    `source` is a local directory (parquet/json/csv/... files named by split, or a dataset saved
    with `save_to_disk`), a single local data file (its rows become the named split), or a hub
    dataset id `org/name`. Arrow-backed and memory-mapped: rows are read from disk on demand.
    """
    import datasets

    source = str(source)
    path = Path(source).expanduser()
    try:
        if path.is_file():
            builder = _BUILDER_BY_SUFFIX.get(path.suffix.lower())
            if builder is None:
                raise DelphiError(
                    f"cannot read {source!r}: unknown file type {path.suffix!r}; "
                    f"expected one of {', '.join(sorted(_BUILDER_BY_SUFFIX))} or a directory"
                )
            name = split_name(split)
            files = _rows_or_refuse(builder, [str(path)], split, source)
            return datasets.load_dataset(builder, data_files={name: files}, split=split)
        if path.is_dir():
            if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
                return _load_saved(path, split)
            found = _split_files(path, split_name(split))
            if found is not None:
                builder, files = found
                files = _rows_or_refuse(builder, files, split, source)
                return datasets.load_dataset(builder, data_files={split_name(split): files}, split=split)
            return datasets.load_dataset(str(path), split=split)
        if path.exists():
            raise DelphiError(f"input {source!r} is neither a regular file nor a directory")
        check_local_or_hub(source, what="dataset", files_ok=True)
        return datasets.load_dataset(source, split=split, revision=revision)
    except DelphiError:
        raise
    except datasets.exceptions.DatasetGenerationError as e:
        cause = e.__cause__ or e
        if "BatchSize must be greater than 0" in str(cause):  # how datasets reads a 0-row parquet file
            raise DelphiError(f"split {split!r} of {source!r} is empty (its data files hold no rows)") from e
        raise DelphiError(f"could not read {source!r} (split {split!r}): {cause}") from e
    except PermissionError as e:
        raise DelphiError(f"input {source!r} is not readable: {e}") from e
    except (ValueError, KeyError) as e:
        msg = str(e)
        if "corresponds to no data" in msg:
            raise DelphiError(f"split {split!r} of {source!r} is empty: {msg}") from e
        if "split" in msg.lower():
            raise DelphiError(f"split {split!r} not found in {source!r}: {msg}") from e
        raise DelphiError(f"could not load {source!r} (split {split!r}): {msg}") from e
    except FileNotFoundError as e:
        raise DelphiError(f"no data files found in {source!r}: {e}") from e
    except (ConnectionError, OSError) as e:
        raise DelphiError(
            f"could not load dataset {source!r} from the hub ({type(e).__name__}: {e}); "
            "check the id, your network and HF_TOKEN, or pass a local path"
        ) from e


def _rows_or_refuse(builder: str, files: list[str], split: str, source: str) -> list[str]:
    """The parquet files among `files` that hold rows; a split whose files hold none is refused here.

    datasets cannot read a 0-row parquet file: it logs the arrow error twice and shows a progress bar
    before raising, so delphi reads the row counts from the files' footers first (no data is read).
    """
    if builder != "parquet":
        return files
    import pyarrow.parquet as pq

    with_rows = [f for f in files if pq.ParquetFile(f).metadata.num_rows > 0]
    if not with_rows:
        raise DelphiError(f"split {split!r} of {source!r} is empty (its data files hold no rows)")
    return with_rows


def _split_files(folder: Path, name: str) -> tuple[str, list[str]] | None:
    """Data files of split `name` in `folder` (`{name}-*.parquet`, `{name}.jsonl`, `data/{name}-*`, ...).

    Naming the files explicitly makes any split name work (datasets only infers train/validation/test)
    and keys datasets' cache on the files themselves rather than on the folder.
    """
    for pattern in (f"{name}-*", f"{name}.*", f"data/{name}-*", f"data/{name}.*"):
        files = sorted(f for f in folder.glob(pattern) if f.suffix.lower() in _BUILDER_BY_SUFFIX)
        builders = {_BUILDER_BY_SUFFIX[f.suffix.lower()] for f in files}
        if len(builders) == 1:
            return builders.pop(), [str(f) for f in files]
    return None


def _load_saved(path: Path, split: str):
    """A dataset written by `save_to_disk` (DatasetDict or Dataset), sliced like load_dataset."""
    import datasets

    obj = datasets.load_from_disk(str(path))
    name = split_name(split)
    if isinstance(obj, datasets.DatasetDict):
        if name not in obj:
            raise DelphiError(f"split {name!r} not found in {str(path)!r}; available: {sorted(obj)}")
        obj = obj[name]
    if split != name:
        # reuse datasets' own slicing parser for `name[...]`
        (window,) = datasets.ReadInstruction.from_spec(split).to_absolute({name: len(obj)})
        obj = obj.select(range(window.from_, window.to))
    return obj


def require_text_feature(ds, feature: str, source: str) -> None:
    """Fail early, naming the columns that exist, if `feature` is missing or not a string column."""
    if feature not in ds.column_names:
        raise DelphiError(
            f"feature {feature!r} not found in {source!r}; available columns: {ds.column_names}"
        )
    dtype = getattr(ds.features[feature], "dtype", None)
    if dtype not in ("string", "large_string"):
        raise DelphiError(
            f"feature {feature!r} in {source!r} has type {ds.features[feature]}, expected a string column"
        )
    if len(ds) == 0:
        raise DelphiError(f"split of {source!r} is empty: nothing to read from feature {feature!r}")
