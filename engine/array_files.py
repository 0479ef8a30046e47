"""Input arrays from .npy / .npz files, for the command line (`engine predict`, `engine bench`).
Never unpickles."""

from __future__ import annotations

import numpy as np

from .errors import EngineError


def read_input_arrays(path: str, names: list, what: str = "") -> dict:
    """{input name: array} for a model with inputs `names`: a .npy (a one-input model) or a
    .npz with one array per input name (or a single array for a one-input model). `what`
    prefixes messages (e.g. "bench: --input ")."""
    where = f"{what}{path}"
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise EngineError(f"{where}: no such file") from None
    except (OSError, ValueError, EOFError) as e:
        raise EngineError(f"{where}: not a readable .npy/.npz array file ({e})") from None
    if isinstance(data, np.ndarray):
        if len(names) != 1:
            raise EngineError(f"{where}: the model has {len(names)} inputs {list(names)}; give a .npz with "
                              "one array each")
        return {names[0]: data}
    with data:
        arrays = {k: data[k] for k in data.files}
    if len(arrays) == 1 and len(names) == 1:
        return {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise EngineError(f"{where}: no array for input(s) {missing} (the file holds {sorted(arrays)})")
    return {n: arrays[n] for n in names}
