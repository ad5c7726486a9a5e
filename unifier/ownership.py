"""What a run may do to an existing folder: use it, overwrite what unifier wrote there, or refuse.

unifier deletes only inside a folder whose run.json says unifier wrote it, only the entries unifier
writes (RunFolder.OWNED), never a folder that holds the current directory, the recipe, the data, the
model or the user's home, and never the checkpoints of a resumable run unless told to discard them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .runfolder import RunFolder
from .runlock import RunLock

# "prepared": `unify prepare` wrote it, and the native program it printed may have trained (and checkpointed) since
RESUMABLE_STATUSES = ("running", "interrupted", "failed", "prepared")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int


def complete_checkpoints(folder: RunFolder) -> list[Checkpoint]:
    """checkpoint-<step> folders whose trainer_state.json (the trainer writes it last) is whole, newest first."""
    found = []
    for path in folder.checkpoint_dirs():
        step = int(path.name.rsplit("-", 1)[1])
        try:
            state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(state, dict) and state.get("global_step") == step:
            found.append(Checkpoint(path=path, step=step))
    return sorted(found, key=lambda c: c.step, reverse=True)


def newest_checkpoint(folder: RunFolder) -> Checkpoint | None:
    checkpoints = complete_checkpoints(folder)
    return checkpoints[0] if checkpoints else None


def protected_paths(spec, recipe: str | None) -> list[tuple[Path, str]]:
    """Folders a run folder must never hold (overwriting it would delete them)."""
    from . import builtin

    protected = [(Path.cwd(), "the current directory"), (Path.home(), "your home folder"), (Path("/"), "/")]
    if recipe:
        protected.append((Path(recipe), "the recipe"))
    for source in [*spec.data.train, *spec.data.eval]:
        if not builtin.is_builtin(source.path) and Path(source.path).exists():
            protected.append((Path(source.path), f"the data source {source.path}"))
    model = spec.model.name_or_path
    if not builtin.is_builtin(model) and Path(model).exists():
        protected.append((Path(model), "the model folder"))
    return protected


def claim_folder(
    folder: RunFolder, spec, *, if_exists: str, recipe: str | None = None, discard_checkpoints: bool = False
) -> RunLock:
    """Make `folder` this run's, or raise UserError (exit 2) before anything is written or deleted.
    Returns the held lock (the caller releases it when the run ends)."""
    root = folder.root
    if root.exists() and not root.is_dir():
        raise UserError(f"output.dir {root} is a file, not a folder", hint="choose another output.dir")
    entries = {p.name for p in root.iterdir()} if root.is_dir() else set()
    if entries - {RunFolder.LOCK_NAME}:
        record = _unifier_record(folder)
        if record is None and entries <= set(RunFolder.OWNED):
            # unifier's own entries without a run.json yet: another run is preparing it, or one died doing so
            lock = _lock(folder)
            lock.release()
            record = {"status": "unfinished (no run.json)"}
        if record is None:
            raise UserError(
                f"{root}: run folder already exists and holds files unifier did not write (no unifier run.json); "
                "unifier never writes into or deletes such a folder",
                hint="choose another output.dir",
            )
        lock = _lock(folder)
        try:
            _reuse(
                folder,
                record,
                spec,
                if_exists=if_exists,
                recipe=recipe,
                discard_checkpoints=discard_checkpoints,
            )
        except BaseException:
            lock.release()
            raise
        return lock
    _create(root)
    return _lock(folder)


def _unifier_record(folder: RunFolder) -> dict | None:
    try:
        return folder.read_record()
    except UserError:
        return None


def _lock(folder: RunFolder) -> RunLock:
    return RunLock(folder.lock).acquire()


def _create(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"output.dir {root}: cannot create the run folder ({exc.strerror})",
            hint="choose a folder you can write to",
        ) from None
    if not _writable(root):
        raise UserError(
            f"output.dir {root}: the folder is not writable", hint="choose a folder you can write to"
        )


def _writable(root: Path) -> bool:
    import os

    return os.access(root, os.W_OK | os.X_OK)


def _reuse(
    folder: RunFolder, record: dict, spec, *, if_exists: str, recipe: str | None, discard_checkpoints: bool
) -> None:
    root = folder.root
    checkpoint = newest_checkpoint(folder)
    resumable = record.get("status") in RESUMABLE_STATUSES and checkpoint is not None
    only_prepared = record.get("status") == "prepared" and checkpoint is None
    if if_exists == "error" and not only_prepared:  # a prepared folder holds nothing but what prepare derived
        hint = (
            f"continue it with `unify resume {root}`, " if resumable else ""
        ) + "set output.if_exists: overwrite (--set output.if_exists=overwrite), or choose another output.dir"
        raise UserError(f"{root}: run folder already exists ({record.get('status')})", hint=hint)
    for path, what in protected_paths(spec, recipe):
        if _contains(root, path):
            raise UserError(
                f"output.dir {root} holds {what} ({path}); unifier will not overwrite it",
                hint="point output.dir at a folder of its own, e.g. runs/{name}",
            )
    if resumable and not discard_checkpoints:
        raise UserError(
            f"{root}: holds a resumable run ({record.get('status')}, newest checkpoint at step "
            f"{checkpoint.step}); overwriting it would delete its checkpoints",
            hint=f"continue it with `unify resume {root}`, or pass --discard-checkpoints to start over",
        )
    if not _writable(root):
        raise UserError(
            f"output.dir {root}: the folder is not writable", hint="choose a folder you can write to"
        )
    for name in RunFolder.OWNED:
        path = root / name
        if name == RunFolder.LOCK_NAME or not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _contains(folder: Path, path: Path) -> bool:
    folder, path = folder.resolve(), path.resolve()
    return path == folder or folder in path.parents
