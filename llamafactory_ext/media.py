"""Image paths as LLaMA-Factory 0.9.5 resolves them, and the paths our builders write so that it finds them.

LLaMA-Factory (``llamafactory/data/converter.py``, ``DatasetConverter._find_medias``) turns each image path of a
local dataset into ``os.path.join(media_dir, path)`` when that is a file, and otherwise keeps ``path`` as given,
which is then opened relative to the working directory of the training run. ``media_dir`` defaults to
``dataset_dir`` (``hparams/data_args.py``). So a path relative to the dataset folder, or an absolute path, is
found wherever ``llamafactory-cli`` runs; a path relative to the folder of some input file is not.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["media_path_for", "resolve_media"]


def resolve_media(image: str, media_dir: str | os.PathLike | None) -> Path:
    """The file LLaMA-Factory opens for ``image``: ``media_dir/image`` if that is a file, else ``image``.

    Example:

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); _ = (d / "a.png").write_bytes(b"")
    >>> resolve_media("a.png", d) == d / "a.png", resolve_media("b.png", d)
    (True, PosixPath('b.png'))
    """
    if media_dir is not None:
        joined = os.path.join(media_dir, image)
        if os.path.isfile(joined):
            return Path(joined)
    return Path(image)


def media_path_for(image: str | os.PathLike, media_dir: str | os.PathLike) -> str:
    """The path to write for the existing file ``image`` so that LLaMA-Factory finds it with ``media_dir``.

    Relative to ``media_dir`` when the image lies inside it (the dataset folder stays movable), else absolute.

    Example:

    >>> media_path_for("/data/ds/images/a.png", "/data/ds"), media_path_for("/elsewhere/b.png", "/data/ds")
    ('images/a.png', '/elsewhere/b.png')
    """
    path = Path(os.path.abspath(image))
    try:
        return path.relative_to(os.path.abspath(media_dir)).as_posix()
    except ValueError:
        return str(path)
