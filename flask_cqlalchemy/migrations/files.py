"""Migration files: finding them, reading them, writing new ones.

A migration is one file in the migrations directory, named
``<version>_<name>.cql`` or ``<version>_<name>.py``. The version is a
whole number (``flask cql migrate new`` writes the UTC time,
``20261202143000``); files run in the order of their versions.

* ``.cql``: CQL statements separated by ``;``. ``--``, ``//`` and
  ``/* */`` comments are allowed; a ``;`` inside a string, a quoted name
  or a ``$$`` string does not end a statement.
* ``.py``: a module with ``def upgrade(session)``, for data migrations;
  ``session`` is a :class:`~flask_cqlalchemy.migrations.runner.MigrationSession`.

Each file's checksum (SHA-256 of its text, line ends as ``\\n``) is recorded when it runs: a
file changed afterwards is refused by ``upgrade`` and shown by ``status``.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import MigrationFileError

#: ``<version>_<name>.<cql|py>``
FILE_NAME = re.compile(r"^(?P<version>[0-9]+)_(?P<name>[A-Za-z0-9][A-Za-z0-9_\-]*)\.(?P<kind>cql|py)$")
_BATCH_START = re.compile(r"^BEGIN\s+((UNLOGGED|COUNTER)\s+)?BATCH\b", re.IGNORECASE)
_BATCH_END = re.compile(r"\bAPPLY\s+BATCH\s*$", re.IGNORECASE)
#: Files of the directory that are not migrations and are not reported.
_IGNORED = re.compile(r"^(\..*|__init__\.py|__pycache__|README.*|.*~|.*\.pyc)$")


@dataclass(frozen=True)
class MigrationFile:
    """One migration file."""

    #: The version as a number written without leading zeros: the key of its
    #: state row, so ``0003_x.cql`` renamed ``3_x.cql`` is the same migration.
    version: str
    name: str
    path: Path
    #: ``"cql"`` or ``"py"``.
    kind: str
    checksum: str

    @property
    def number(self) -> int:
        return int(self.version)

    @property
    def filename(self) -> str:
        return self.path.name

    def statements(self) -> list[str]:
        """The statements of a ``.cql`` file, in order, comments removed.

        Raises :class:`MigrationFileError` for an unterminated string or comment.
        """
        return split_cql(read_text(self.path), self.filename)

    def load_upgrade(self) -> Callable[[Any], Any]:
        """The ``upgrade(session)`` function of a ``.py`` file.

        Raises :class:`MigrationFileError` when the module cannot be
        imported or has no callable ``upgrade``.
        """
        module_name = f"flask_cqlalchemy_migration_{self.version}"
        spec = importlib.util.spec_from_file_location(module_name, self.path)
        if spec is None or spec.loader is None:  # pragma: no cover - a .py path always has a loader
            raise MigrationFileError(self.filename, "cannot be imported")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise MigrationFileError(self.filename, f"cannot be imported: {type(exc).__name__}: {exc}") from exc
        upgrade = getattr(module, "upgrade", None)
        if not callable(upgrade):
            raise MigrationFileError(self.filename, "has no function upgrade(session)")
        return upgrade  # type: ignore[no-any-return]


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_text(path: Path) -> str:
    """A migration file's text: UTF-8, a byte-order mark dropped and line
    ends made ``\\n``, so that a checkout with CRLF line ends (git's autocrlf)
    has the same checksum and statements as one with LF."""
    return path.read_text(encoding="utf-8-sig").replace("\r\n", "\n")


def discover(directory: Path) -> list[MigrationFile]:
    """Every migration in ``directory``, in version order (none if it does not exist).

    Raises :class:`MigrationFileError` for a file that looks like a
    migration but is not named like one, and for two files of one version.
    """
    if not directory.is_dir():
        return []
    found: dict[str, MigrationFile] = {}
    for path in sorted(directory.iterdir()):
        if path.is_dir() or _IGNORED.match(path.name):
            continue
        match = FILE_NAME.match(path.name)
        if match is None:
            if path.suffix in (".cql", ".py"):
                raise MigrationFileError(
                    path.name, "is not named <version>_<name>.cql or .py (e.g. 20261202143000_add_tags.cql)"
                )
            continue
        version = str(int(match["version"]))
        if version in found:
            raise MigrationFileError(path.name, f"has the same version as {found[version].filename}")
        found[version] = MigrationFile(
            version=version,
            name=match["name"],
            path=path,
            kind=match["kind"],
            checksum=checksum(read_text(path).encode()),
        )
    return sorted(found.values(), key=lambda f: f.number)


def split_cql(text: str, source: str = "<cql>") -> list[str]:
    """Split CQL text into statements at each ``;`` outside strings, quoted
    names and comments; drop the comments and empty statements."""
    statements: list[str] = []
    current: list[str] = []
    at, end, line = 0, len(text), 1

    def finish() -> None:
        statement = "".join(current).strip()
        if _BATCH_START.match(statement) and not _BATCH_END.search(statement):
            current.append(";")  # inside BEGIN BATCH ... APPLY BATCH: one statement
            return
        if statement:
            statements.append(statement)
        current.clear()

    while at < end:
        char = text[at]
        pair = text[at : at + 2]
        if pair in ("--", "//"):
            newline = text.find("\n", at)
            at = end if newline < 0 else newline
            continue
        if pair == "/*":
            close = text.find("*/", at + 2)
            if close < 0:
                raise MigrationFileError(source, f"has a /* comment that never ends (line {line})")
            line += text.count("\n", at, close)
            current.append(" ")
            at = close + 2
            continue
        if pair == "$$":
            close = text.find("$$", at + 2)
            if close < 0:
                raise MigrationFileError(source, f"has a $$ string that never ends (line {line})")
            current.append(text[at : close + 2])
            line += text.count("\n", at, close)
            at = close + 2
            continue
        if char in "'\"":
            # Quotes inside are doubled ('it''s', "a""b").
            scan = at + 1
            while True:
                close = text.find(char, scan)
                if close < 0:
                    what = "string" if char == "'" else "quoted name"
                    raise MigrationFileError(source, f"has a {what} that never ends (line {line})")
                if text[close + 1 : close + 2] == char:
                    scan = close + 2
                    continue
                break
            current.append(text[at : close + 1])
            line += text.count("\n", at, close)
            at = close + 1
            continue
        if char == ";":
            finish()
        else:
            if char == "\n":
                line += 1
            current.append(char)
        at += 1
    statement = "".join(current).strip()
    if statement and _BATCH_START.match(statement) and not _BATCH_END.search(statement):
        raise MigrationFileError(source, "has a BEGIN BATCH without its APPLY BATCH")
    finish()
    return statements


def slug(name: str) -> str:
    """``name`` as the name part of a file name: lower case, words joined by ``_``.

    Raises :class:`MigrationFileError` when nothing usable is left.
    """
    words = re.findall(r"[A-Za-z0-9]+", name)
    if not words:
        raise MigrationFileError(name, "is not a usable migration name: use letters, digits and underscores")
    return "_".join(words).lower()[:80]


def new_version(existing: list[MigrationFile], now: datetime.datetime | None = None) -> str:
    """The UTC time as ``YYYYMMDDHHMMSS``, above every existing version."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    version = int(now.strftime("%Y%m%d%H%M%S"))
    highest = max((f.number for f in existing), default=0)
    return str(max(version, highest + 1))


def write_new(directory: Path, name: str, kind: str, body: str) -> Path:
    """Create ``<version>_<name>.<kind>`` in ``directory`` (made if missing) with ``body``."""
    if kind not in ("cql", "py"):
        raise MigrationFileError(name, f"unknown migration kind {kind!r}: cql or py")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{new_version(discover(directory))}_{slug(name)}.{kind}"
    with path.open("x", encoding="utf-8") as out:
        out.write(body)
    return path
