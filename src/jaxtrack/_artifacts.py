"""An artifact's files, found and copied without following a link out of the artifact.

The path a user gives as an artifact is followed once: a link given as the
artifact names what they chose to store. Inside a directory artifact no link
is ever followed. A link that resolves inside the artifact is kept as a link
(made relative, so the copy's link points into the copy); a link that points
outside it (a private key, ``/etc/shadow``), a broken link, a link to the
directory holding it or above (a loop), and anything that is not a regular
file or directory (a FIFO, a socket, a device) are left out, and an
[`ArtifactWarning`][jaxtrack.errors.ArtifactWarning] names each. Nothing is
walked through a link, so a link loop costs no time.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import stat

from jaxtrack.errors import ArtifactWarning, UnsafePathError, warn

# Opening a file never follows a link put in its place after the scan, nor waits on a FIFO.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


@dataclasses.dataclass
class ArtifactFiles:
    """What an artifact holds: its real path, and for a directory its parts by relative path.

    Examples:
        >>> import os, tempfile
        >>> root = tempfile.mkdtemp()
        >>> os.mkdir(os.path.join(root, "ckpt"))
        >>> _ = open(os.path.join(root, "ckpt", "params.bin"), "w").write("weights")
        >>> os.symlink(os.path.join(root, "ckpt", "params.bin"), os.path.join(root, "ckpt", "latest"))
        >>> os.symlink("/etc/hostname", os.path.join(root, "ckpt", "host"))
        >>> found = scan_artifact(os.path.join(root, "ckpt"))
        >>> found.files, found.links, found.skipped
        (['params.bin'], [('latest', 'params.bin', False)], [('host', 'a link pointing outside the artifact')])
    """

    root: str
    """The artifact's real path (the given path, with the links in it resolved)."""
    is_dir: bool
    """Whether the artifact is a directory (else one regular file)."""
    directories: list[str] = dataclasses.field(default_factory=list)
    """The sub-directories, parents first."""
    files: list[str] = dataclasses.field(default_factory=list)
    """The regular files."""
    links: list[tuple[str, str, bool]] = dataclasses.field(default_factory=list)
    """Links kept: ``(path, target relative to the link's directory, whether the target is a directory)``."""
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    """What was left out, and why."""


def scan_artifact(path: str | os.PathLike[str]) -> ArtifactFiles:
    """The files, directories and links of the artifact at ``path``, following no link inside it.

    A ``path`` that is neither a regular file nor a directory (after its links
    are followed) is a ``ValueError``; a missing one a ``FileNotFoundError``.
    """
    given = os.fspath(path)
    try:
        root = os.path.realpath(given, strict=True)
    except OSError as error:
        if not os.path.lexists(given):
            raise FileNotFoundError(f"artifact path does not exist: {given!r}") from None
        raise ValueError(f"artifact path {given!r} cannot be resolved: {error.strerror or error}") from None
    mode = os.stat(root).st_mode
    if stat.S_ISREG(mode):
        return ArtifactFiles(root=root, is_dir=False)
    if not stat.S_ISDIR(mode):
        raise ValueError(f"artifact path {given!r} is not a regular file or a directory")
    found = ArtifactFiles(root=root, is_dir=True)
    pending = [""]
    while pending:  # a stack, not recursion: nesting depth costs no Python frames
        relative_dir = pending.pop()
        with os.scandir(os.path.join(root, relative_dir)) as entries:
            listed = sorted(entries, key=lambda entry: entry.name)
        for entry in listed:
            relative = os.path.join(relative_dir, entry.name)
            if entry.is_symlink():
                _scan_link(found, relative)
            elif entry.is_dir(follow_symlinks=False):
                found.directories.append(relative)
                pending.append(relative)
            elif entry.is_file(follow_symlinks=False):
                found.files.append(relative)
            else:
                found.skipped.append((relative, "not a regular file, directory or link"))
    found.directories.sort()
    found.files.sort()
    return found


def _scan_link(found: ArtifactFiles, relative: str) -> None:
    link = os.path.join(found.root, relative)  # its directories are real: none of them is a link
    try:
        target = os.path.realpath(link, strict=True)
    except OSError as error:
        found.skipped.append((relative, "a link loop" if error.errno == errno.ELOOP else "a broken link"))
        return
    if os.path.commonpath([found.root, target]) != found.root:
        found.skipped.append((relative, "a link pointing outside the artifact"))
        return
    is_dir = os.path.isdir(target)
    link_dir = os.path.dirname(link)
    if is_dir and os.path.commonpath([target, link_dir]) == target:
        found.skipped.append((relative, "a link to a directory holding it, a loop"))
        return
    found.links.append((relative, os.path.relpath(target, link_dir), is_dir))


def warn_skipped(found: ArtifactFiles, name: str) -> None:
    """Issues an [`ArtifactWarning`][jaxtrack.errors.ArtifactWarning] naming each part of the artifact left out (none: no warning)."""
    if not found.skipped:
        return
    parts = ", ".join(f"{relative!r} ({why})" for relative, why in found.skipped)
    warn(
        f"jaxtrack: artifact {name!r} ({found.root!r}): {len(found.skipped)} "
        f"{'entry' if len(found.skipped) == 1 else 'entries'} left out, as no link is followed out of an "
        f"artifact: {parts}",
        ArtifactWarning,
    )


def copy_artifact(path: str | os.PathLike[str], target: str, *, name: str) -> ArtifactFiles:
    """Copies the artifact at ``path`` to ``target`` (which must not exist), keeping links that stay inside it.

    Regular files keep their mode and times. What is left out is named in an
    [`ArtifactWarning`][jaxtrack.errors.ArtifactWarning] (``name`` says which
    artifact); returns what was found.

    Examples:
        >>> import os, tempfile
        >>> root = tempfile.mkdtemp()
        >>> os.mkdir(os.path.join(root, "run"))
        >>> _ = open(os.path.join(root, "run", "a.txt"), "w").write("a")
        >>> os.symlink("a.txt", os.path.join(root, "run", "b.txt"))
        >>> _ = copy_artifact(os.path.join(root, "run"), os.path.join(root, "copy"), name="run")
        >>> sorted(os.listdir(os.path.join(root, "copy"))), os.readlink(os.path.join(root, "copy", "b.txt"))
        (['a.txt', 'b.txt'], 'a.txt')
    """
    found = scan_artifact(path)
    if not found.is_dir:
        _copy_file(found.root, target)
        return found
    os.mkdir(target)
    for relative in found.directories:
        os.mkdir(os.path.join(target, relative))
    for relative in found.files:
        _copy_file(os.path.join(found.root, relative), os.path.join(target, relative))
    for relative, link_target, is_dir in found.links:
        os.symlink(link_target, os.path.join(target, relative), target_is_directory=is_dir)
    warn_skipped(found, name)
    return found


def own_folder(directory: str, *, owner: str) -> str:
    """Makes ``directory`` if missing and returns it; one that is a link (or no directory) is an ``UnsafePathError``.

    For the folders jaxtrack makes to hold artifacts (``owner`` says whose):
    a link planted there would have it write somewhere else.

    Examples:
        >>> import os, tempfile
        >>> root = tempfile.mkdtemp()
        >>> own_folder(os.path.join(root, "artifacts"), owner="the run store") == os.path.join(root, "artifacts")
        True
    """
    try:
        os.mkdir(directory)
    except FileExistsError:
        pass
    if os.path.islink(directory) or not os.path.isdir(directory):
        what = f"a link to {os.readlink(directory)!r}" if os.path.islink(directory) else "not a directory"
        raise UnsafePathError(
            f"{directory!r} is {what}, not a folder of {owner}'s own: jaxtrack does not write artifacts through "
            "it. Remove it (jaxtrack makes the folder again), or choose another path"
        )
    return directory


def _copy_file(source: str, target: str) -> None:
    descriptor = os.open(source, _OPEN_FLAGS)
    with open(descriptor, "rb") as reader:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):  # replaced since the scan
            raise ValueError(f"artifact file {source!r} changed while it was copied: it is no longer a regular file")
        with open(target, "xb") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
    os.chmod(target, stat.S_IMODE(status.st_mode))
    os.utime(target, ns=(status.st_atime_ns, status.st_mtime_ns))


__all__ = ["ArtifactFiles", "copy_artifact", "own_folder", "scan_artifact", "warn_skipped"]
