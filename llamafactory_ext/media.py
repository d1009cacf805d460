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

__all__ = ["MediaPaths", "media_path_for", "resolve_media"]


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
    For many images, :class:`MediaPaths` gives the same answers without re-reading the working directory.

    Example:

    >>> media_path_for("/data/ds/images/a.png", "/data/ds"), media_path_for("/elsewhere/b.png", "/data/ds")
    ('images/a.png', '/elsewhere/b.png')
    """
    path = Path(os.path.abspath(image))
    try:
        return path.relative_to(os.path.abspath(media_dir)).as_posix()
    except ValueError:
        return str(path)


class MediaPaths:
    """:func:`media_path_for` with ``media_dir`` and the working directory read once, by string operations.

    For a builder's million images: ``os.path.abspath`` asks the OS for the working directory on each call
    and pathlib parses every path; here both folders are absolute once and each image costs a ``normpath``
    and a prefix test. POSIX paths only (elsewhere it calls :func:`media_path_for`).

    Example:

    >>> to_write = MediaPaths("/data/ds")
    >>> to_write("/data/ds/images/a.png"), to_write("/data/ds/../ds/b.png"), to_write("/elsewhere/b.png")
    ('images/a.png', 'b.png', '/elsewhere/b.png')
    """

    def __init__(self, media_dir: str | os.PathLike) -> None:
        self.media_dir = media_dir
        self.cwd = os.getcwd()
        self.base = os.path.abspath(media_dir)
        self.prefix = self.base if self.base.endswith("/") else self.base + "/"

    def __call__(self, image: str | os.PathLike) -> str:
        path = os.path.normpath(os.path.join(self.cwd, image))  # == os.path.abspath(image)
        if os.sep != "/" or path.startswith(
            "//"
        ):  # POSIX's implementation-defined "//" root: pathlib decides
            return media_path_for(image, self.media_dir)
        if path == self.base:
            return "."
        return path[len(self.prefix) :] if path.startswith(self.prefix) else path
