# ms-swift external plugin of unifier (`--external_plugins this_file --callbacks unifier_metrics ...`).
# ms-swift imports it in every training process before it loads any config, tokenizer or model. It gives an
# ms-swift run the same callbacks as the other backends (backends/hf_callbacks.py), on the run folder named
# by UNIFIER_RUN_DIR (paths from unifier.runfolder.RunFolder):
#   unifier_metrics     metrics.jsonl in unifier's schema, written by the main process while training
#   unifier_health      stop at the first non-finite loss or gradient norm
#   unifier_stop        SIGINT/SIGTERM or unifier's stop request: checkpoint at the next step, then stop
#   unifier_scrub       no secret value stays in a saved checkpoint
#   unifier_cpu_4bit    keep bitsandbytes' CPU 4-bit layers trainable after an evaluation
#   unifier_rank_check  at the end, every rank writes a digest of its trainable weights, so unifier can prove
#                       that the ranks trained one model together (DDP) and not independent copies
#   unifier_probe       output.probe: the first tokenized samples, trainable parameters, initial weights
# With UNIFIER_DEEPSPEED_OVER_GLOO=1 (compute.strategy zero* on CPU) it starts DeepSpeed over gloo first;
# and, with UNIFIER_TRUST_REMOTE_CODE=false, it makes ms-swift honour trust_remote_code: false (ms-swift 4.6
# loads config, tokenizer and model with trust_remote_code=True whatever it is told).
import json
import os

from swift.callbacks import TrainerCallback, callbacks_map
from unifier.backends import hf_callbacks

from unifier.runfolder import RunFolder

EVENTS = (
    "on_init_end",
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_step_begin",
    "on_substep_end",
    "on_step_end",
    "on_evaluate",
    "on_predict",
    "on_save",
    "on_log",
    "on_prediction_step",
)


def run_folder() -> RunFolder:
    return RunFolder(os.environ["UNIFIER_RUN_DIR"])


def main_process() -> bool:
    return int(os.environ.get("RANK", 0)) == 0


def swift_callback(make):
    """An ms-swift callback class (constructed as cls(args, trainer)) that forwards every event to make()."""

    class Forwarding(TrainerCallback):
        def __init__(self, args, trainer):
            super().__init__(args, trainer)
            self.inner = make()

    def forward(event):
        def method(self, *args, **kwargs):
            return getattr(self.inner, event)(*args, **kwargs) if self.inner is not None else None

        return method

    for event in EVENTS:
        setattr(Forwarding, event, forward(event))
    return Forwarding


def register_tokens_template():
    """unifier_tokens: ms-swift trains the token ids and labels unifier's encoder wrote into each row
    (unifier/data/encode.py; the row's unifier_input_ids / unifier_labels, rejected_... for the rejected side of
    a preference pair), so its samples are the other backends' by construction. ms-swift's truncation, padding,
    collator and trainers are unchanged."""
    from swift.template import Template, TemplateMeta, register_template

    class GivenTokens(Template):
        def _encode(self, inputs):
            extra = inputs.extra_kwargs
            prompt = (getattr(inputs, "chat_template_kwargs", None) or {}).get("unifier_input_ids")
            if prompt is not None:  # a GRPO prompt: generation, or the prompt + its sampled answer
                return self._prompt_encoding(list(prompt), inputs.messages)
            if "unifier_input_ids" not in extra:
                if os.environ.get("UNIFIER_GRPO_REWARDS") and all(
                    m["role"] != "assistant" for m in inputs.messages
                ):
                    # ms-swift's GRPO re-encodes bare prompt messages only to print them in its rollout log
                    text = "\n".join(str(m.get("content") or "") for m in inputs.messages)
                    return {
                        "input_ids": self.tokenizer.encode(text, add_special_tokens=False),
                        "labels": None,
                    }
                raise ValueError(
                    "the row carries no unifier_input_ids: ms-swift must read unifier's data view"
                )
            labels = list(extra["unifier_labels"])
            if labels:
                labels[0] = -100  # as ms-swift's own encoding (the first token is never predicted)
            return {"input_ids": list(extra["unifier_input_ids"]), "labels": labels, "loss_scale": None}

        @staticmethod
        def _prompt_encoding(prompt, messages):
            """ms-swift hands the sampled answer back as token ids in the last assistant turn (its
            replace_assistant_response_with_ids): the prompt's tokens + those, loss on the answer only."""
            last = messages[-1] if messages else {}
            answer = last.get("content") if last.get("role") == "assistant" else None
            if isinstance(answer, dict):
                answer = answer.get("input_ids")
            if isinstance(answer, list) and all(isinstance(token, int) for token in answer):
                return {
                    "input_ids": prompt + answer,
                    "labels": [-100] * len(prompt) + answer,
                    "loss_scale": None,
                }
            if answer:
                raise ValueError("a GRPO answer reached the template as text, not as the sampled token ids")
            return {"input_ids": prompt, "labels": None, "loss_scale": None}

    register_template(
        TemplateMeta(
            "unifier_tokens",
            prefix=[],
            prompt=["{{QUERY}}"],
            chat_sep=None,
            template_cls=GivenTokens,
            agent_template="hermes",  # ms-swift's loader wants one for rows with tools; nothing renders them here
        ),
        exist_ok=True,
    )


def register_rewards():
    """GRPO: unifier's reward functions (UNIFIER_GRPO_REWARDS, from the plan) as ms-swift reward classes named
    after each reward, called with what the other backends give them: the prompt messages, the completions
    decoded from their sampled tokens as trl decodes them, and the rows' columns."""
    raw = os.environ.get("UNIFIER_GRPO_REWARDS")
    if not raw:
        return
    from swift.rewards import ORM, orms
    from unifier.backends.inline_library import load_rewards

    config = json.loads(raw)
    tokenizers = []

    def decode(ids):
        if not tokenizers:
            from transformers import AutoTokenizer

            trust = os.environ.get("UNIFIER_TRUST_REMOTE_CODE", "false") == "true"
            tokenizers.append(AutoTokenizer.from_pretrained(config["tokenizer"], trust_remote_code=trust))
        return tokenizers[0].batch_decode(ids, skip_special_tokens=True)

    def reward_class(name, score):
        def __call__(self, completions, **kwargs):
            ids = kwargs.get("response_token_ids")
            if not ids or any(not isinstance(answer, list) for answer in ids):
                raise ValueError("ms-swift passed no sampled token ids to the reward functions")
            prompts = [
                messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages
                for messages in kwargs["messages"]
            ]
            from unifier.backends.inline_library import reward_columns

            columns = reward_columns(kwargs["unifier_columns"])
            return score(prompts, decode(ids), [len(answer) for answer in ids], columns)

        return type(name, (ORM,), {"__call__": __call__})

    for name, score in load_rewards(config["rewards"], config["max_completion_length"]):
        orms[name] = reward_class(name, score)


def keep_unifiers_kl_pairs():
    """KTO: the KL answer of each row is the one unifier paired it with (kl_completion_ids in the row's tokens,
    data/tokens.py), as on the other backends; ms-swift would reshuffle the rows with data_seed and rotate the
    answers within its global batch instead."""
    import swift.pipelines.train.kto as kto

    kto._get_kl_dataset = lambda dataset, total_batch_size, num_proc, seed=None: dataset


def install():
    if os.environ.get("UNIFIER_TRUST_REMOTE_CODE", "false") != "true":
        from unifier.backends.remote_code import forbid_remote_code

        forbid_remote_code()
    from unifier.backends.ranks import prepare_worker

    prepare_worker()  # a torchrun worker: stop gracefully on the first signal, its error named if it fails
    if os.environ.get("UNIFIER_DEEPSPEED_OVER_GLOO") == "1" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # DeepSpeed on CPU processes: accelerate starts DeepSpeed's communication on GPUs only, and without it
        # ZeRO-3 counts one process (its batch-size check fails)
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")
    register_tokens_template()
    register_rewards()
    keep_unifiers_kl_pairs()
    callbacks_map.update(
        {
            "unifier_metrics": swift_callback(
                lambda: (
                    hf_callbacks.MetricsCallback(run_folder().metrics, run_folder().data_summary)
                    if main_process()
                    else None
                )
            ),
            "unifier_health": swift_callback(hf_callbacks.HealthCallback),
            "unifier_stop": swift_callback(
                lambda: hf_callbacks.StopOnSignalCallback(str(run_folder().stop_request))
            ),
            "unifier_scrub": swift_callback(hf_callbacks.ScrubSecretsCallback),
            # unifier's one progress bar (on the terminal while `unify run` keeps ms-swift's output in run.log)
            "unifier_progress": swift_callback(
                lambda: hf_callbacks.RichProgressCallback() if main_process() else None
            ),
            "unifier_cpu_4bit": swift_callback(hf_callbacks.CpuFourBitCallback),
            "unifier_rank_check": swift_callback(
                lambda: hf_callbacks.RankWeightsCallback(run_folder().ranks)
            ),
            "unifier_probe": swift_callback(lambda: hf_callbacks.ProbeCallback(run_folder().probe)),
            "unifier_schedule": swift_callback(hf_callbacks.ResumedScheduleCallback),
        }
    )


install()
