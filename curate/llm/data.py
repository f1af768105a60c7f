"""Load a dataset from a hub id, a local file, a folder of data files, or a ``save_to_disk`` folder.

Everything comes back as a :class:`datasets.Dataset` with columns renamed to the names the caller
asks for, so later code can rely on ``prompt`` / ``response`` (or any canonical names).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any
from pathlib import Path

import datasets

from curate.core.errors import BadInputError, first_line

# File suffix (curate.core.io.DATA_FILE_SUFFIXES) -> builder name of the `datasets` packaged loaders.
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}

# Column names tried, in order, when the caller names no prompt / response column.
PROMPT_CANDIDATES = ("prompt", "question", "instruction", "problem", "query", "input")
RESPONSE_CANDIDATES = ("response", "answer", "completion", "output", "solution", "canonical_solution")


# A selection folder (`curate select`, `curate run`: scored.jsonl beside it) is read as its selection.
SELECTION_FILE = "selected.jsonl"


def load_data(
    source: str | os.PathLike,
    *,
    split: str = "train",
    columns: Mapping[str, str] | None = None,
    config: str | None = None,
    limit: int | None = None,
) -> datasets.Dataset:
    """Load ``source`` as one split of a :class:`datasets.Dataset`.

    Args:
        source: a ``.jsonl``/``.json``/``.parquet``/``.csv`` file, a folder written by
            ``save_to_disk``, a ``curate select`` output folder (its ``selected.jsonl``), a folder
            of such data files (splits inferred from file names, e.g. ``train.jsonl``/``test.jsonl``),
            or a Hugging Face Hub dataset id.
        split: the split to return when the source has several.
        columns: mapping ``{wanted_name: column_in_source}``; each source column is renamed.
        config: the hub dataset's configuration name (e.g. ``"main"`` for ``openai/gsm8k``).
        limit: keep only the first ``limit`` rows.

    Raises:
        BadInputError: unknown file type, a path that does not exist or cannot be read, a missing
            split or column, or an empty dataset.
    """
    if limit is not None and limit <= 0:
        raise BadInputError(f"limit must be a positive integer, got {limit}")
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        ds = _load_local(path, split)
    elif looks_like_path(text):
        raise BadInputError(f"dataset path does not exist: {text}")
    else:
        ds = _load_hub(text, config, split)
    if len(ds) == 0:
        raise BadInputError(f"dataset is empty: {text} (split '{split}')")
    if limit is not None and limit < len(ds):
        ds = ds.select(range(limit))
    return rename_columns(ds, columns or {})


def rename_columns(ds: datasets.Dataset, columns: Mapping[str, str]) -> datasets.Dataset:
    """Rename ``{wanted: existing}`` columns; a missing one is named with the available list."""
    missing = [src for src in columns.values() if src not in ds.column_names]
    if missing:
        raise BadInputError(
            f"column '{missing[0]}' not found; available columns: {', '.join(ds.column_names)}"
        )
    renames = {src: dst for dst, src in columns.items() if src != dst}
    clashing = [dst for dst in renames.values() if dst in ds.column_names and dst not in renames]
    if clashing:
        ds = ds.remove_columns(clashing)
    return ds.rename_columns(renames) if renames else ds


def resolve_column(
    ds: datasets.Dataset, name: str | None, candidates: Sequence[str], role: str
) -> str:
    """Return ``name`` if the dataset has it, else the first candidate column present."""
    if name is not None:
        if name not in ds.column_names:
            raise BadInputError(
                f"{role} column '{name}' not found; available columns: {', '.join(ds.column_names)}"
            )
        return check_text_column(ds, name, role)
    for candidate in candidates:
        if candidate in ds.column_names:
            return check_text_column(ds, candidate, role)
    raise BadInputError(
        f"no {role} column found (tried {', '.join(candidates)}); name one with --{role}-column; "
        f"available columns: {', '.join(ds.column_names)}"
    )


def check_text_column(ds: datasets.Dataset, column: str, role: str) -> str:
    """``column``, after checking that every row holds a string (no null, number or list); the
    error names the column, the first bad row and its value."""
    if getattr(ds.features[column], "dtype", None) in ("string", "large_string") and \
            ds.data.column(column).null_count == 0:
        return column  # the common case, read from Arrow's metadata without touching the rows
    for i, value in enumerate(ds[column]):
        if not isinstance(value, str):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise BadInputError(f"{role} column '{column}' row {i}: expected a string, got {shown}")
    return column


def parse_column_map(spec: str | None) -> dict[str, str]:
    """Parse ``"prompt=question,response=answer"`` into ``{"prompt": "question", ...}``."""
    if not spec:
        return {}
    mapping: dict[str, str] = {}
    for item in spec.split(","):
        wanted, sep, existing = item.partition("=")
        if not sep or not wanted.strip() or not existing.strip():
            raise BadInputError(f"bad column mapping '{item}': expected NEW=EXISTING")
        mapping[wanted.strip()] = existing.strip()
    return mapping


def default_data_dir() -> Path | None:
    """The offline data folder: ``$CURATEKIT_DATA``, else ``../shared/data`` beside the checkout."""
    candidates = [os.environ.get("CURATEKIT_DATA")]
    here = Path(__file__).resolve().parents[1]
    candidates += [here.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def looks_like_path(text: str) -> bool:
    """Whether ``text`` is meant as a local path rather than a hub id."""
    return (
        text.startswith((".", "/", "~"))
        or text.count("/") > 1
        or Path(text).suffix.lower() in FILE_BUILDERS
    )


def _load_local(path: Path, split: str) -> datasets.Dataset:
    if not os.access(path, os.R_OK):
        raise BadInputError(f"cannot read dataset path: {path} (permission denied)")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            if _saved_without_shards(path):  # `datasets` cannot load a 0-row save; say why
                raise BadInputError(f"dataset is empty: {path} (saved with no rows)")
            return _pick_split(_read(lambda: datasets.load_from_disk(str(path)), path), split, path)
        if (path / SELECTION_FILE).is_file() and (path / "scored.jsonl").is_file():  # a selection folder
            return _load_local(path / SELECTION_FILE, split)
        data_files = [p for p in path.iterdir() if p.suffix.lower() in FILE_BUILDERS]
        if not data_files:
            raise BadInputError(
                f"folder {path} is neither a save_to_disk dataset nor holds data files "
                f"({', '.join(sorted(FILE_BUILDERS))})"
            )
        loaded = _read(lambda: datasets.load_dataset(str(path)), path)
        return _pick_split(loaded, split, path)
    builder = FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise BadInputError(
            f"unknown file type '{path.suffix or path.name}' for {path}; "
            f"supported: {', '.join(sorted(FILE_BUILDERS))}, or a save_to_disk folder"
        )
    if path.stat().st_size == 0:
        raise BadInputError(f"dataset is empty: {path} (0 bytes)")
    return _read(lambda: datasets.load_dataset(builder, data_files=str(path), split="train"), path)


def _load_hub(name: str, config: str | None, split: str) -> datasets.Dataset:
    try:
        return datasets.load_dataset(name, config, split=split)
    except ValueError as err:  # unknown split or config
        raise BadInputError(f"cannot load split '{split}' of hub dataset '{name}': {first_line(err)}")
    except Exception as err:  # noqa: BLE001 - network, auth, not found: all end the same way
        raise BadInputError(
            f"cannot load '{name}': not a local path, and the Hugging Face Hub gave: {first_line(err)}"
        ) from err


def _saved_without_shards(path: Path) -> bool:
    state = path / "state.json"
    if not state.exists():
        return False
    try:
        return json.loads(state.read_text(encoding="utf-8-sig")).get("_data_files") == []
    except (OSError, ValueError):
        return False


def _pick_split(
    loaded: datasets.Dataset | datasets.DatasetDict, split: str, path: Path
) -> datasets.Dataset:
    if isinstance(loaded, datasets.Dataset):
        return loaded
    if split not in loaded:
        raise BadInputError(f"split '{split}' not in {path}; available splits: {', '.join(loaded)}")
    return loaded[split]


def _read(load, path: Path):
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # local reads take a moment; their bars only add noise
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # a reader's own error log would be a second line
    try:
        return load()
    except BadInputError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise BadInputError(f"cannot read {path}: {first_line(err)}") from err
    finally:
        datasets.logging.set_verbosity(verbosity)
        if was_enabled:
            datasets.enable_progress_bars()



def save_dataset(ds: datasets.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` atomically: ``.jsonl``/``.json``/``.parquet``/``.csv`` by suffix, else a
    ``save_to_disk`` folder."""
    from curate.core.io import atomic_dir, atomic_file

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in FILE_BUILDERS:
        with atomic_file(path) as tmp:
            if suffix in (".jsonl", ".json"):
                ds.to_json(str(tmp), lines=suffix == ".jsonl", force_ascii=False)
            elif suffix == ".parquet":
                ds.to_parquet(str(tmp))
            else:
                ds.to_csv(str(tmp), index=False)
        return path
    with atomic_dir(path) as tmp:
        ds.save_to_disk(str(tmp))
    return path


def selection_provenance(source: str | os.PathLike | None) -> dict[str, Any] | None:
    """Where a training set came from, when it is a selection (a ``curate select`` / ``curate run``
    folder, or the ``selected.jsonl`` in one): the curatekit metadata of its dataset card."""
    if not source:
        return None
    path = Path(source).expanduser()
    folder = path if path.is_dir() else path.parent
    card = folder / "README.md"
    if not (folder / SELECTION_FILE).is_file() or not card.is_file():
        return None
    from huggingface_hub import DatasetCard

    try:
        meta = DatasetCard.load(card).data.to_dict().get("curatekit")
    except Exception:  # noqa: BLE001 - a hand-edited card is no reason to stop a finished training
        return None
    return {"dataset": str(source), "selection": meta}


def write_provenance(output_dir: str | os.PathLike, source: str | os.PathLike | None) -> None:
    """``provenance.json`` in a trained model's folder when it was trained on a selection."""
    from curate.core.io import atomic_write_json

    record = selection_provenance(source)
    if record is not None:
        atomic_write_json(Path(output_dir) / "provenance.json", record)
