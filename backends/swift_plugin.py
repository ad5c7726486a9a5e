# ms-swift external plugin of unifier (`--external_plugins this_file --callbacks unifier_metrics ...`).
# It gives an ms-swift run the same callbacks as the other backends, on the run folder named by
# UNIFIER_RUN_DIR (paths from unifier.runfolder.RunFolder):
#   unifier_metrics     metrics.jsonl in unifier's schema, written by the main process while training
#   unifier_rank_check  at the end, every rank writes a digest of its trainable weights, so unifier can prove
#                       that the ranks trained one model together (DDP) and not independent copies
#   unifier_probe       output.probe: the first tokenized samples, trainable parameters, initial weights
import hashlib
import json
import os

from swift.callbacks import TrainerCallback, callbacks_map

from unifier.runfolder import RunFolder


def run_folder() -> RunFolder:
    return RunFolder(os.environ["UNIFIER_RUN_DIR"])


class MetricsCallback(TrainerCallback):
    def __init__(self, args, trainer):
        super().__init__(args, trainer)
        from unifier.backends.hf_callbacks import MetricsCallback as Writer

        self.writer = Writer(run_folder().metrics) if int(os.environ.get("RANK", 0)) == 0 else None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.on_train_begin(args, state, control, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.writer is not None:
            self.writer.on_log(args, state, control, logs=logs, **kwargs)


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
        folder = run_folder().ranks
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"rank{record['rank']}.json"), "w") as handle:
            json.dump(record, handle)


class ProbeCallback(TrainerCallback):
    """output.probe: what the trainer trains on, recorded under <run folder>/probe (backends/probe.py)."""

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        from unifier.backends.probe import record_train_start

        if int(os.environ.get("RANK", 0)) == 0:
            record_train_start(str(run_folder().probe), model, train_dataloader)


callbacks_map["unifier_metrics"] = MetricsCallback
callbacks_map["unifier_rank_check"] = RankWeightsCallback
callbacks_map["unifier_probe"] = ProbeCallback
