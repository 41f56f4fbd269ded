"""Checkpoints that survive preemption, corruption and hostile files.

Model + optimizer go through ``torch.distributed.checkpoint`` (sharded, loadable on a different number
of ranks); the trainer state (step, data position, counters, RNG) is ours and is plain JSON. Each
checkpoint is written into ``step_XXXXXXX.tmp`` and renamed, so it either exists whole or not at all.

Safety of a received run directory: nothing in it is unpickled without a restricted loader. DCP's
``.metadata`` file is a pickle: it is read with an unpickler that admits only DCP's own metadata
classes, ``torch.Size`` and dtypes; tensor shards load with ``torch.load(weights_only=True)``, and so
do DCP's non-tensor items (the optimizer's hyper-parameters), which the stock planner would unpickle
freely. A ``manifest.json`` written at save time (size and SHA-256 of every file) is checked before
anything is read, so flipped bits or a truncated shard are refused rather than resumed — it guards
integrity, not authenticity: anyone can write a matching manifest, which is why the loaders
themselves must be safe.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import math
import os
import pickle
import shutil
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict, set_model_state_dict, set_state_dict

from . import distributed
from .errors import UserError, io_errors
from .hashing import sha256_file

STATE_FILE = "trainer_state.json"
LEGACY_STATE_FILE = "trainer_state.pt"  # written by earlier versions; read with weights_only=True
INFO_FILE = "checkpoint.json"  # written last: a directory with it is a complete checkpoint
MANIFEST_FILE = "manifest.json"


@contextlib.contextmanager
def quiet_dcp():
    """DCP warns that it "assumes a single process" whenever no process group exists; that is our intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch.distributed is disabled, unavailable or uninitialized")
        yield


# ------------------------------------------------------------------------------------ safe readers
_DCP_CLASSES = {
    ("torch.distributed.checkpoint.metadata", n) for n in (
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata", "TensorProperties",
        "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")
} | {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
     ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"), ("collections", "OrderedDict")}


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's ``.metadata`` and nothing else: any other global is refused before it is looked up."""

    def find_class(self, module: str, name: str):
        if (module, name) in _DCP_CLASSES:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.memory_format)):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from checkpoint metadata")


class SafeReader(FileSystemReader):
    """DCP's file-system reader with the restricted metadata unpickler."""

    def read_metadata(self, *args, **kwargs):  # noqa: D102
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as fh:
            metadata = _MetadataUnpickler(fh).load()
        from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
        if not isinstance(metadata, Metadata):
            raise pickle.UnpicklingError("checkpoint metadata is not a DCP Metadata object")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """Non-tensor checkpoint items (e.g. the optimizer's hyper-parameters) with ``weights_only=True``."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:  # noqa: D102
        obj = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            from torch.distributed.checkpoint._traverse import set_element  # what the stock planner uses
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


def _dcp_load(state: dict, path: Path) -> None:
    """``dcp.load`` with the safe reader and planner; any failure is a one-line ``UserError``."""
    from torch.distributed.checkpoint.api import CheckpointException  # a BaseException, not an Exception
    logging.disable(logging.WARNING)  # DCP logs each failed read at length; the error below says it once
    try:
        with quiet_dcp():
            dcp.load(state, storage_reader=SafeReader(str(path)), planner=SafeLoadPlanner())
    except (CheckpointException, Exception) as e:
        raise UserError(f"checkpoint {path} could not be loaded ({type(e).__name__}: {_reason(e)})") from None
    finally:
        logging.disable(logging.NOTSET)


# ------------------------------------------------------------------------------------ listing
def _dir_name(step: int) -> str:
    return f"step_{step:07d}"


def step_of(path: Path) -> int:
    """The step a checkpoint directory was saved before (``step_0000800`` → 800)."""
    return int(path.name.removeprefix("step_"))


def checkpoint_at(ckpt_root: Path, step: int) -> Path:
    return ckpt_root / _dir_name(step)


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Complete checkpoints (their info file exists), oldest first."""
    if not ckpt_root.is_dir():
        return []
    done = [p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith("step_")
            and p.name.removeprefix("step_").isdigit() and (p / INFO_FILE).is_file()]
    return sorted(done, key=lambda p: p.name)


def clean_partial(ckpt_root: Path) -> None:
    """Remove ``.tmp`` leftovers of a save that was killed."""
    if distributed.is_main() and ckpt_root.is_dir():
        for p in ckpt_root.glob("step_*.tmp"):
            shutil.rmtree(p, ignore_errors=True)


# ------------------------------------------------------------------------------------ manifests
def _hash_files(directory: Path, names) -> dict:
    return {n: {"bytes": (directory / n).stat().st_size, "sha256": sha256_file(directory / n)} for n in sorted(names)}


def _own_files(directory: Path, rank: int) -> list[str]:
    """The shard files this rank wrote (DCP names them ``__{rank}_{i}.distcp``)."""
    return [p.name for p in directory.iterdir() if p.name.startswith(f"__{rank}_")]


def verify(path: Path) -> None:
    """Raise ``UserError`` unless every file listed in the checkpoint's manifest is there, whole and unchanged.

    A checkpoint written before manifests existed (it has the legacy ``trainer_state.pt`` and no manifest)
    cannot be checked; it is accepted with a warning — its files are still read with the safe loaders.
    """
    if not (path / MANIFEST_FILE).exists() and (path / LEGACY_STATE_FILE).is_file() and (path / INFO_FILE).is_file():
        distributed.print0(f"warning: {path} was written by an earlier version without checksums; loading it "
                           "unverified (with the safe loaders)")
        return
    from .received import CHECKPOINT_INFO, MANIFEST, MANIFEST_ENTRY, check, read_json
    try:
        manifest = read_json(path / MANIFEST_FILE, MANIFEST)["files"]
        info = read_json(path / INFO_FILE, CHECKPOINT_INFO)
        for name, want in manifest.items():
            check(want, MANIFEST_ENTRY, f"{path / MANIFEST_FILE}: files: {name}")
            if name in ("", ".", "..") or "/" in name or "\\" in name:
                raise UserError(f"{path / MANIFEST_FILE} names {name!r}, not a file of the checkpoint")
        if info["step"] != step_of(path):
            raise UserError(f"{path / INFO_FILE}: field 'step' is {info['step']}, but the checkpoint is step {step_of(path)}")
    except UserError as e:
        raise UserError(f"checkpoint {path} is damaged ({e})") from None
    for name, want in manifest.items():
        f = path / name
        if not f.is_file():
            raise UserError(f"checkpoint {path} is damaged: {name} is missing")
        if f.stat().st_size != want["bytes"] or sha256_file(f) != want["sha256"]:
            raise UserError(f"checkpoint {path} is damaged: {name} does not match its checksum")


# ------------------------------------------------------------------------------------ trainer state
def _encode_state(state: dict) -> dict:
    """Trainer state → JSON-safe values: tensors (the RNG state) as base64 bytes, ±inf as strings."""
    def enc(v):
        if isinstance(v, torch.Tensor):
            return {"__tensor_uint8__": base64.b64encode(v.to(torch.uint8).numpy().tobytes()).decode()}
        if isinstance(v, float) and not math.isfinite(v):
            return {"__float__": repr(v)}
        if isinstance(v, dict):
            return {k: enc(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [enc(x) for x in v]
        return v
    return enc(state)


def _decode_state(obj):
    if isinstance(obj, dict):
        if set(obj) == {"__tensor_uint8__"}:
            return torch.frombuffer(bytearray(base64.b64decode(obj["__tensor_uint8__"])), dtype=torch.uint8).clone()
        if set(obj) == {"__float__"}:
            return float(obj["__float__"])
        return {k: _decode_state(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode_state(v) for v in obj]
    return obj


def read_trainer_state(path: Path) -> dict:
    """The trainer state of checkpoint ``path`` (counters, data position), verified and read safely."""
    verify(path)
    try:
        return _read_state(path)
    except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"checkpoint {path}: its trainer state could not be read ({type(e).__name__}: "
                        f"{_reason(e)})") from None


def _read_state(path: Path) -> dict:
    if (path / STATE_FILE).is_file():
        source, state = path / STATE_FILE, _decode_state(json.loads((path / STATE_FILE).read_text()))
    else:
        source, state = path / LEGACY_STATE_FILE, torch.load(path / LEGACY_STATE_FILE, weights_only=True)
    return _check_state(state, str(source), step_of(path))


def _check_state(state, source: str, step: int) -> dict:
    """A trainer state's fields, each with its type and range (``received.TRAINER_STATE``), the step its checkpoint
    is named after, and an RNG state torch accepts — else one line naming the file and the field. The manifest
    cannot vouch for these: anyone who edits the file can rewrite the manifest to match."""
    from .received import LOADER_STATE, TRAINER_STATE, check
    check(state, TRAINER_STATE, source, only=True)
    check(state["loader"], LOADER_STATE, f"{source}: loader")
    if state["step"] != step:
        raise UserError(f"{source}: field 'step' is {state['step']}, but the checkpoint is step {step}")
    cpu = (state.get("rng") or {}).get("cpu")
    if cpu is not None and not (isinstance(cpu, torch.Tensor) and cpu.dtype == torch.uint8
                                and cpu.shape == torch.get_rng_state().shape):
        raise UserError(f"{source}: field 'rng' does not hold a CPU random-generator state")
    return state


# ------------------------------------------------------------------------------------ save / load
def save(ckpt_root: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
         trainer_state: dict, fingerprint: dict, keep: int, pinned: frozenset[int] = frozenset()) -> Path:
    """Save a checkpoint for resuming *before* 0-based ``step``; collective (all ranks call it). The newest
    ``keep`` are kept, and those of the ``pinned`` steps (where cooldown branches start) whatever their age."""
    final = ckpt_root / _dir_name(step)
    tmp = ckpt_root / (_dir_name(step) + ".tmp")
    rank = distributed.rank_world()[0]
    with io_errors(f"writing checkpoint {final}"):
        if distributed.is_main():
            ckpt_root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        distributed.barrier()
        model_sd, optim_sd = get_state_dict(model, optimizer)
        with quiet_dcp():
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
        files = _hash_files(tmp, _own_files(tmp, rank))  # each rank hashes the shards it wrote
        files = distributed.gather_dicts(files)
        if distributed.is_main():
            (tmp / STATE_FILE).write_text(json.dumps(_encode_state(trainer_state)))
            files |= _hash_files(tmp, [n for n in (STATE_FILE, ".metadata") if (tmp / n).is_file()])
            (tmp / MANIFEST_FILE).write_text(json.dumps({"files": files}, indent=1))
            (tmp / INFO_FILE).write_text(json.dumps({"step": step, "fingerprint": fingerprint}, indent=2))
            _fsync_dir(tmp)
            if final.exists():  # re-saving the same step (e.g. a stop signal right after a periodic save)
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(ckpt_root)
            for old in [c for c in list_checkpoints(ckpt_root) if step_of(c) not in pinned][:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        distributed.barrier()
    return final


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def latest_valid(ckpt_root: Path, warn=_to_stderr) -> Path | None:
    """The newest checkpoint that passes :func:`verify`; damaged newer ones are skipped, and said (on stderr unless
    ``warn`` says otherwise) once a sound one is found — when none is, one error line says so, with the newest one's
    damage."""
    said, newest_damage = [], None
    for _ in range(3):  # a training process may rotate checkpoints away while we look: then look again
        found = list_checkpoints(ckpt_root)
        rotated = False
        for path in reversed(found):
            try:
                verify(path)
                for line in said:
                    warn(line)
                return path
            except UserError as e:
                if not path.exists():  # removed by rotation between listing and reading: not damage
                    said.append(f"note: {path.name} was replaced while reading (a run is training there); took the "
                                "next newest")
                    rotated = True
                    break
                newest_damage = newest_damage or str(e)
                said.append(f"warning: {e}; using an older one")
        if not rotated:
            break
    if found:
        raise UserError(f"every checkpoint in {ckpt_root} is damaged (the newest: {newest_damage}): there is nothing to "
                        "resume, evaluate or export from it (train again into a new --out)")
    return None


def check_compatible(saved: dict, current: dict, path: Path) -> None:
    """A checkpoint only resumes into (or exports as) the same numbers, model shape and data.

    Fingerprints of earlier versions have no ``config`` entry; for them the model shape and the data are
    compared (the run's settings come from its saved ``config.toml``, which resume checks separately).
    """
    keys = current if "config" in saved else [k for k in ("model", "data") if k in current]
    if isinstance(saved.get("config"), dict):
        # a field added since the checkpoint was written: that run trained with the field's default behaviour
        from .config import Config
        saved = saved | {"config": Config().numbers() | saved["config"]}
    if isinstance(saved.get("model"), dict):  # likewise a model field added since (e.g. the mixture of experts)
        import dataclasses

        from .model import ModelConfig
        added = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.default is not dataclasses.MISSING}
        saved = saved | {"model": added | saved["model"]}
    if saved.get("data_content") not in (None, current.get("data_content")):
        raise UserError(f"checkpoint {path} was trained on other data than this run's (the training shards' content "
                        "hashes or the tokenizer differ from what it recorded): point --data at the folder it trained "
                        "on, or start a new run directory")
    keys = [k for k in keys if k != "data_content"]  # checked above; absent from checkpoints written before it
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {current[k]!r}" for k in keys if saved.get(k) != current[k]]
    if diffs:
        raise UserError(f"checkpoint {path} comes from an incompatible config ({'; '.join(diffs)}); "
                        f"resume with the run's saved config or start a new run directory")


def _info(path: Path) -> dict:
    return json.loads((path / INFO_FILE).read_text())


def load_latest(ckpt_root: Path, model: nn.Module, optimizer: torch.optim.Optimizer, fingerprint: dict) -> dict | None:
    """Load the newest sound checkpoint into ``model``/``optimizer``; return the trainer state (or None)."""
    path = latest_valid(ckpt_root, warn=distributed.print0)
    return None if path is None else _load_verified(path, model, optimizer, fingerprint)


def load_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, fingerprint: dict) -> dict:
    """Load checkpoint ``path`` (verified, and saved with ``fingerprint``) into ``model``/``optimizer``; return
    the trainer state — where a cooldown branch starts."""
    verify(path)
    return _load_verified(path, model, optimizer, fingerprint)


def _load_verified(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, fingerprint: dict) -> dict:
    check_compatible(_info(path).get("fingerprint", {}), fingerprint, path)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    _dcp_load(state, path)
    try:
        trainer_state = _read_state(path)
    except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"checkpoint {path}: its trainer state could not be read ({type(e).__name__}: "
                        f"{_reason(e)})") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return trainer_state


def load_model_weights(path: Path, model: nn.Module, fingerprint: dict) -> None:
    """Load only the model weights of checkpoint ``path`` (verified, safe, and matching ``fingerprint``)."""
    verify(path)
    check_compatible(_info(path).get("fingerprint", {}), fingerprint, path)
    state = {"model": get_model_state_dict(model)}
    _dcp_load(state, path)
    set_model_state_dict(model, state["model"])


def _reason(e: BaseException) -> str:
    """The gist of a (possibly multi-line, per-rank) error: its last line, shortened."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(e).__name__
    return text if len(text) <= 240 else text[:240] + "…"
