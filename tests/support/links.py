"""Directory artifacts holding real symbolic links, and the evidence that nothing they point to was copied.

``artifact_with_links`` makes a checkpoint directory holding links to a
private key outside it, to ``/etc/shadow``, to a directory outside it, and
one link that stays inside; with ``loops=True`` also a link to its own
parent, a cycle of two links, a broken link and a FIFO. ``secret_files`` lists the
regular files under a folder that hold any of the secrets.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

SECRET = b"-----BEGIN OPENSSH PRIVATE KEY----- jaxtrack-test-secret"
OTHER_SECRET = b"jaxtrack-test-secret-in-a-directory-outside"


@dataclasses.dataclass
class LinkedArtifact:
    root: Path
    """The directory artifact."""
    files: dict[str, bytes]
    """Its regular files (relative path -> content)."""
    kept: dict[str, str]
    """Links that stay inside it (relative path -> the link's text), kept as links."""
    refused: list[str]
    """Links an ``ArtifactWarning`` must name (relative paths)."""


def artifact_with_links(base: Path, *, loops: bool = False) -> LinkedArtifact:
    """A directory ``base/ckpt`` whose links point outside it (and, with ``loops``, around in circles)."""
    home = base / "home" / ".ssh"
    home.mkdir(parents=True)
    (home / "id_rsa").write_bytes(SECRET)
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "token.txt").write_bytes(OTHER_SECRET)

    root = base / "ckpt"
    (root / "nested").mkdir(parents=True)
    files = {"params.bin": b"\x00\x01weights", os.path.join("nested", "opt.txt"): b"optimizer state"}
    for relative, content in files.items():
        (root / relative).write_bytes(content)
    (root / "id_rsa").symlink_to(home / "id_rsa")  # absolute, outside
    (root / "nested" / "key").symlink_to(os.path.join("..", "..", "home", ".ssh", "id_rsa"))  # relative, outside
    (root / "shadow").symlink_to("/etc/shadow")
    (root / "elsewhere").symlink_to(elsewhere, target_is_directory=True)
    (root / "latest").symlink_to("params.bin")  # inside: kept
    (root / "nested" / "params").symlink_to(root / "params.bin")  # inside, absolute: kept, made relative
    kept = {"latest": "params.bin", os.path.join("nested", "params"): os.path.join("..", "params.bin")}
    refused = ["id_rsa", os.path.join("nested", "key"), "shadow", "elsewhere"]
    if loops:
        (root / "nested" / "up").symlink_to("..", target_is_directory=True)
        (root / "self").symlink_to(".", target_is_directory=True)
        (root / "cycle_a").symlink_to("cycle_b")
        (root / "cycle_b").symlink_to("cycle_a")
        (root / "broken").symlink_to("missing.bin")
        refused += [os.path.join("nested", "up"), "self", "cycle_a", "cycle_b", "broken"]
        if hasattr(os, "mkfifo"):
            os.mkfifo(root / "pipe")  # copying would wait for a writer forever
            refused.append("pipe")
    return LinkedArtifact(root=root, files=files, kept=kept, refused=refused)


def secret_files(folder: str | os.PathLike[str]) -> list[str]:
    """The regular files under ``folder`` (no link followed) holding a secret of ``artifact_with_links`` or ``/etc/shadow``."""
    secrets = [SECRET, OTHER_SECRET]
    try:
        secrets.append(Path("/etc/shadow").read_bytes())
    except OSError:
        pass  # not readable here: nothing could have copied it either
    found = []
    for directory, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(directory, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                data = Path(path).read_bytes()
                if any(secret and secret in data for secret in secrets):
                    found.append(path)
    return found


def assert_copied_without_following_links(copy: Path, artifact: LinkedArtifact) -> None:
    """``copy`` holds the artifact's files, its inside links as links, and nothing its other links point to."""
    for relative, content in artifact.files.items():
        assert (copy / relative).read_bytes() == content
    for relative, text in artifact.kept.items():
        assert (copy / relative).is_symlink() and os.readlink(copy / relative) == text
        assert (copy / relative).resolve().is_relative_to(copy.resolve())
    for relative in artifact.refused:
        assert not os.path.lexists(copy / relative), relative
    assert secret_files(copy) == []
