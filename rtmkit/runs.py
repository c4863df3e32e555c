"""Run directories shared by the commands (predict, train ...)."""

from __future__ import annotations

from pathlib import Path


def increment_dir(base: str | Path, name: str, mkdir: bool = True) -> Path:
    """``base/name``, or ``base/name2``, ``base/name3`` ... if it exists (a fresh folder per run)."""
    base = Path(base)
    path, n = base / name, 2
    while path.exists():
        path, n = base / f"{name}{n}", n + 1
    if mkdir:
        path.mkdir(parents=True)
    return path


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
