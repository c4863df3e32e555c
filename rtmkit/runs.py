"""Run directories shared by the commands (predict, train ...)."""

from __future__ import annotations

from pathlib import Path


class OutputError(OSError):
    """An output could not be written (full disk, read-only folder, permissions); the message names the path.
    ``errno`` keeps the cause's error number; ``str()`` is the message alone."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def increment_dir(base: str | Path, name: str, mkdir: bool = True) -> Path:
    """``base/name``, or ``base/name2``, ``base/name3`` ... if it exists (a fresh folder per run).

    Creating the folder is the claim: two processes starting at once get two folders. Raises
    :class:`OutputError` naming the folder when it cannot be created (read-only, full, no permission)."""
    base = Path(base)
    n = 1
    while True:
        path = base / (name if n == 1 else f"{name}{n}")
        n += 1
        if path.exists():
            continue
        if not mkdir:
            return path
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue  # taken by another process a moment ago
        except OSError as e:
            raise OutputError(f"{path}: cannot create the output folder ({_reason(e)}); choose a writable "
                              "place with --project (project= in Python)", e.errno) from None
        return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``<path>.tmp`` then rename it over ``path``: ``path`` is either its old self or complete,
    never half-written. Raises :class:`OutputError` naming ``path`` (and removes the ``.tmp``) on failure."""
    import os

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: could not write ({_reason(e)})", e.errno) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


class RunLockError(RuntimeError):
    """Another live process is writing the run directory."""


class RunLock:
    """``<run>/.lock`` holding the writer's pid, created atomically: two processes never train (or resume) into
    one run directory at once. A lock left by a process that no longer exists (killed) is taken over."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / ".lock"
        self.held = False

    def acquire(self) -> RunLock:
        import os

        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _alive(pid):
                    raise RunLockError(f"{self.path.parent} is being written by another process (pid {pid}); "
                                       "wait for it to finish, or stop it first") from None
                self.path.unlink(missing_ok=True)  # stale: its writer is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return self
        raise RunLockError(f"{self.path}: could not take the run lock")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
