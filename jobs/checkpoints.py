"""The training job's checkpoints: written whole or not at all, checked before they are
loaded, and loaded without letting a file run code.

DeepSpeed writes a checkpoint as a tag folder of .pt files plus a `latest` file naming the
tag. A job killed mid-write leaves a partial folder, and a full disk leaves a truncated file
that `latest` still names: every retry then failed. So:

- save: DeepSpeed writes into `.tmp-<tag>`; rank 0 syncs the files, records each one's
  sha256 in `sha256.json`, renames the folder to `<tag>`, then replaces `latest`.
- load: the newest tag whose files match their recorded sha256 and that DeepSpeed loads;
  each one passed over is said (stdout and train.jsonl). `latest` is not trusted, so a
  stale one cannot stop a resume. The sha256 detects truncation and bit rot, not tampering:
  whoever can write a checkpoint can rewrite its hash too.
- DeepSpeed's own loader calls torch.load(weights_only=False), i.e. plain pickle. Ours
  passes weights_only=True with an allow-list of the four DeepSpeed classes its ZeRO
  optimizer shards hold (measured on ZeRO-1/2 fp32 and bf16 shards; model states and the
  client state need none). They are plain data classes: restoring them runs no code.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from runs.errors import one_line
from runs.store import RunFolder, atomic_write_bytes, atomic_write_json

MANIFEST = "sha256.json"
TMP_PREFIX = ".tmp-"
KEEP_CHECKPOINTS = 2


# ---------------------------------------------------------------- loading without pickle's code
def allowed_classes() -> list[type]:
    """What a ZeRO optimizer shard pickles besides tensors and builtins (DeepSpeed 0.19)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def load_weights_only(path, map_location=None):
    import torch

    with torch.serialization.safe_globals(allowed_classes()):
        return torch.load(path, map_location=map_location, weights_only=True)


def use_weights_only(engine) -> None:
    """Make the engine's checkpoint loader use load_weights_only (every DeepSpeed load of
    module, optimizer and ZeRO shards goes through engine.checkpoint_engine.load)."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    current = engine.checkpoint_engine
    if type(current) is not TorchCheckpointEngine:
        raise RuntimeError(f"unexpected DeepSpeed checkpoint engine {type(current).__name__}: "
                           "its loader is not known to be safe")

    class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            return load_weights_only(path, map_location=map_location)

    current.__class__ = WeightsOnlyCheckpointEngine     # keeps its settings; only load changes


# ---------------------------------------------------------------- sha256
def sha256_of(path: Path, sync: bool = False) -> str:
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
        if sync:
            os.fsync(f.fileno())     # on disk before the rename makes the checkpoint visible
    return digest


def write_manifest(tag_dir: Path) -> None:
    files = sorted(p for p in tag_dir.rglob("*") if p.is_file() and p.name != MANIFEST)
    atomic_write_json(tag_dir / MANIFEST, {str(p.relative_to(tag_dir)): sha256_of(p, sync=True) for p in files})


def unusable(tag_dir: Path) -> str | None:
    """Why a checkpoint folder cannot be trusted, or None. One without a manifest (written
    before manifests existed) is tried as it is: a failed load still falls back."""
    manifest = tag_dir / MANIFEST
    if not manifest.is_file():
        return None
    try:
        recorded = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{manifest.name} is not valid JSON"
    for name, digest in sorted(recorded.items()):
        path = tag_dir / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_of(path) != digest:
            return f"{name} does not match its sha256 (truncated or changed after it was written)"
    return None


# ---------------------------------------------------------------- save
def save(engine, folder: RunFolder, step: int, client_state: dict, rank: int) -> str:
    """Write the checkpoint of `step` atomically (see the module's doc); every rank calls it."""
    import torch.distributed as dist

    root, tag = folder.checkpoints, RunFolder.checkpoint_tag(step)
    tmp = root / f"{TMP_PREFIX}{tag}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)      # a save that was killed half-way
    dist.barrier()
    engine.save_checkpoint(str(root), tag=tmp.name, client_state=client_state, save_latest=False)
    # save_checkpoint ends in a barrier: every rank's files are written
    if rank == 0:
        write_manifest(tmp)
        final = root / tag
        if final.exists():          # a checkpoint passed over on resume, now written again
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_bytes(root / "latest", tag.encode())
        prune(folder)
    dist.barrier()
    return tag


def prune(folder: RunFolder, keep: int = KEEP_CHECKPOINTS) -> None:
    for old in folder.checkpoint_tags()[:-keep]:
        shutil.rmtree(folder.checkpoints / old, ignore_errors=True)
    for leftover in folder.checkpoints.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)


# ---------------------------------------------------------------- load
def load_newest(engine, folder: RunFolder, rank: int) -> tuple[int, dict | None, list[dict]]:
    """(step, client state, one log row per checkpoint passed over) of the newest checkpoint
    that is whole and loads; (0, None, rows) when none does. All ranks call it.

    Rank 0 checks the hashes and tells the others which tags to try, so that every rank
    tries the same ones; a load that fails on any rank moves all of them to the next tag."""
    import torch
    import torch.distributed as dist

    candidates: list = [None]
    if rank == 0:
        candidates[0] = [(tag, unusable(folder.checkpoints / tag)) for tag in reversed(folder.checkpoint_tags())]
    dist.broadcast_object_list(candidates, src=0)
    skipped, tried = [], False
    for tag, reason in candidates[0]:
        client = None
        if reason is None:
            tried = True
            try:
                _, client = engine.load_checkpoint(str(folder.checkpoints), tag=tag, load_module_strict=True)
                if client is None:
                    reason = "DeepSpeed found nothing to load"
            except Exception as err:     # a file that is not a checkpoint any more
                reason = one_line(err, limit=300)
        ok = torch.tensor([0 if reason else 1])
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if ok.item() == 1:
            return int(client["step"]), client, skipped
        reason = reason or "did not load on another rank"
        skipped.append({"event": "checkpoint_skipped", "tag": tag, "reason": reason})
        if rank == 0:
            print(f"[train {folder.run_id}] checkpoint {tag} passed over: {reason}", flush=True)
    if tried:
        # a load that failed half-way may have changed the engine: starting from it at step 0
        # would not be a clean start
        raise RuntimeError(f"{folder.checkpoints}: no checkpoint loads ({skipped[-1]['reason']}); "
                           "move the folder away to train from step 0")
    return 0, None, skipped
