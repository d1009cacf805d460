"""Read the items of a top-level JSON list one at a time, in bounded memory.

``json.load`` of a 300 MB list of a million records holds the text and every record at once (~2 GB);
:func:`iter_json_array` holds one buffer of the file and one item, so a builder that streams its output
too stays flat whatever the input size. Items are exactly what ``json.load`` would give.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from evaluators.errors import UserError

__all__ = ["MAX_ITEM_CHARS", "iter_json_array"]

_WHITESPACE = " \t\n\r"
_NUMBER_CHARS = frozenset("0123456789.eE+-")
_NUMBERS = (int, float)
#: The separator between two items (whitespace, a comma, whitespace), matched at a position.
_COMMA = re.compile(r"[ \t\n\r]*,[ \t\n\r]*").match
#: An item that does not decode within this many characters is reported as malformed (no item is this big).
MAX_ITEM_CHARS = 64 * 1024 * 1024


def iter_json_array(
    path: str | os.PathLike, chunk_chars: int = 1 << 20, *, on_read: Callable[[int], object] | None = None
) -> Iterator[Any]:
    """Yield the items of the JSON list in ``path``, reading ``chunk_chars`` characters at a time.

    ``on_read`` (*optional*) is called with the number of bytes of each chunk read: they add up to the file's
    size, so a progress bar needs no counting pass.

    Raises:
        UserError: the file is not a JSON list or is malformed (line and column named, as ``json.load``
            reports them); nothing after the closing ``]`` but whitespace is allowed.

    Example:

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
    >>> _ = p.write_text('[{"a": 1},\\n {"b": [2, "x]"]}, 3 ]\\n')
    >>> list(iter_json_array(p, chunk_chars=4))
    [{'a': 1}, {'b': [2, 'x]']}, 3]
    >>> read = []
    >>> _ = list(iter_json_array(p, chunk_chars=4, on_read=read.append))
    >>> sum(read) == p.stat().st_size
    True
    >>> _ = p.write_text('[{"a": 1},\\n {"b" 2}]')
    >>> list(iter_json_array(p))
    Traceback (most recent call last):
    ...
    evaluators.errors.UserError: ...a.json: malformed JSON at line 2, column 7: Expecting ':' delimiter.
    """
    path = Path(path)
    decode = json.JSONDecoder().raw_decode
    with path.open(encoding="utf-8") as handle:
        buf = ""
        pos = 0  # position in buf
        line, line_start = 1, 0  # line of buf[0] and the (negative) offset of that line's start in buf
        eof = False

        def refill() -> bool:
            """Drop what was consumed and append the next chunk; False (nothing changed) at end of file."""
            nonlocal buf, pos, line, line_start, eof
            if eof:
                return False
            try:
                chunk = handle.read(chunk_chars)
            except UnicodeDecodeError as err:
                raise UserError(
                    f"{path}: the file is not UTF-8 text (byte 0x{err.object[err.start]:02x}); convert it to UTF-8."
                ) from None
            if not chunk:
                eof = True
                return False
            if on_read is not None:
                on_read(len(chunk) if chunk.isascii() else len(chunk.encode("utf-8")))
            consumed = buf[:pos]
            newlines = consumed.count("\n")
            if newlines:
                line += newlines
                line_start = consumed.rfind("\n") + 1 - pos
            else:
                line_start -= pos
            buf = buf[pos:] + chunk
            pos = 0
            return True

        def fail(at: int, message: str) -> UserError:
            newlines = buf.count("\n", 0, at)
            err_line = line + newlines
            column = at - buf.rfind("\n", 0, at) if newlines else at - line_start + 1
            return UserError(f"{path}: malformed JSON at line {err_line}, column {column}: {message}.")

        def skip_whitespace() -> bool:
            """Advance past whitespace; False when the file ends first."""
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in _WHITESPACE:
                    pos += 1
                if pos < len(buf):
                    return True
                if not refill():
                    return False

        if not skip_whitespace() or buf[pos] != "[":
            raise fail(pos, "expected a JSON list")
        pos += 1
        first = True
        while True:
            # Fast path, nearly every item: ", " then the next value, all in the buffer.
            comma = None if first else _COMMA(buf, pos)
            if comma is not None and comma.end() < len(buf):
                pos = comma.end()
            else:
                if not skip_whitespace():
                    raise fail(pos, "Expecting value")
                if buf[pos] == "]":
                    pos += 1
                    break
                if not first:
                    if buf[pos] != ",":
                        raise fail(pos, "Expecting ',' delimiter")
                    pos += 1
                    if not skip_whitespace():
                        raise fail(pos, "Expecting value")
            while True:
                try:
                    item, end = decode(buf, pos)
                except RecursionError:
                    raise fail(pos, "an item is nested too deeply to read (thousands of levels)") from None
                except json.JSONDecodeError as err:
                    # the item may continue in the next chunk, unless it is already absurdly long
                    if len(buf) - pos < MAX_ITEM_CHARS and refill():
                        continue
                    raise fail(err.pos, err.msg) from None
                # A number at the end of the buffer ("1" of "1.5", "2e" of "2e3") may go on in the next chunk.
                if (
                    isinstance(item, _NUMBERS)
                    and not isinstance(item, bool)
                    and all(c in _NUMBER_CHARS for c in buf[end:])
                    and refill()
                ):
                    continue
                break
            pos = end
            first = False
            yield item
        if skip_whitespace():
            raise fail(pos, "Extra data")
