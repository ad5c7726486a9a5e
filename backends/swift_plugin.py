# ms-swift external plugin used by unifier for multi-process runs (`--external_plugins`, `--callbacks
# unifier_rank_check`). At the end of training every rank writes a digest of its trainable weights, so
# unifier can prove that the ranks trained one model together (DDP) and not independent copies.
# With output.probe: true it also records the first tokenized samples and initial trainable weights.
import hashlib
import json
import os

from swift.callbacks import TrainerCallback, callbacks_map


class RankWeightsCallback(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, **kwargs):
        import torch
        import torch.distributed as dist

        digest = hashlib.sha256()
        target = model if model is not None else self.trainer.model
        for name, param in sorted(target.named_parameters(), key=lambda item: item[0]):
            if param.requires_grad:
                digest.update(name.encode())
                digest.update(param.detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
        initialized = dist.is_available() and dist.is_initialized()
        record = {
            "rank": int(os.environ.get("RANK", 0)),
            "world_size": dist.get_world_size() if initialized else 1,
            "distributed_initialized": initialized,
            "backend": dist.get_backend() if initialized else None,
            "global_step": state.global_step,
            "trainable_digest": digest.hexdigest(),
        }
        folder = os.path.join(args.output_dir, "unifier_ranks")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"rank{record['rank']}.json"), "w") as handle:
            json.dump(record, handle)


class ProbeCallback(TrainerCallback):
    """output.probe: what the trainer trains on, recorded under <run folder>/probe (backends/probe.py)."""

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        from unifier.backends.probe import record_train_start

        if int(os.environ.get("RANK", 0)) == 0:
            folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(args.output_dir))), "probe")
            record_train_start(folder, model, train_dataloader)


callbacks_map["unifier_rank_check"] = RankWeightsCallback
callbacks_map["unifier_probe"] = ProbeCallback
