"""The training methods unifier runs: one table owns what a method is.

Every module that depends on the method reads it here (the spec's method choice and its options section,
the data kind unifier's encoder writes, the trl classes of the Python backends, ms-swift's subcommand and
`--rlhf_type`, the trainer metrics kept in metrics.jsonl, what `unify eval` scores, whether chat/export
apply). Adding a method is one entry here, one options section in unifier/spec/training.py and, on each
backend that has it, its translation of those options. No torch here: validate reads this table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    # unifier's encoder kinds (unifier/data/encode.py) it trains on; the first is the default
    data_kinds: tuple[str, ...]
    trl_config: str  # "module:Class" of the trl config dataclass (peft and unsloth backends)
    trl_trainer: str  # "module:Class" of the trl trainer
    swift_rlhf_type: str | None  # `swift rlhf --rlhf_type` value; None: `swift sft`
    # trainer log keys kept in metrics.jsonl's extra (besides loss, learning rate, ...)
    metric_prefixes: tuple[str, ...] = ()
    # what `unify eval` scores: tokens (loss / perplexity of the trained tokens), pairs (+ chosen vs
    # rejected), rewards (GRPO: the run's rewards of greedy answers), score_head (a reward model's pair ranking)
    eval_scores: str = "tokens"
    data_hint: str = ""  # how to fix data of the wrong kind
    reference_model: bool = False  # needs a frozen reference (a second copy for full fine-tuning)
    trl_max_length: bool = True  # its trl config takes max_length (GRPO's bounds prompt + completion itself)
    scores_text: bool = (
        False  # trains a scalar score head (a reward model): no chat, no merged or GGUF export
    )

    @property
    def trl_config_import(self) -> str:
        """Where the training program imports the config from: the stable ones from `trl` itself, where unsloth
        replaces them with its own (trl_config names the module whose source validate reads)."""
        module, _, name = self.trl_config.partition(":")
        return f"trl:{name}" if module.startswith("trl.trainer.") else self.trl_config

    @property
    def pairwise(self) -> bool:
        return self.data_kinds == ("preference",)


PAIR_METRICS = ("rewards/", "logps/", "logits/")

METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method(
            name="sft",
            summary="supervised fine-tuning on the assistant turns (or all tokens of raw text)",
            data_kinds=("chat", "text"),
            trl_config="trl.trainer.sft_config:SFTConfig",
            trl_trainer="trl:SFTTrainer",
            swift_rlhf_type=None,
            data_hint="use chat or text rows for sft",
        ),
        Method(
            name="dpo",
            summary="direct preference optimisation against a frozen reference",
            data_kinds=("preference",),
            trl_config="trl.trainer.dpo_config:DPOConfig",
            trl_trainer="trl:DPOTrainer",
            swift_rlhf_type="dpo",
            metric_prefixes=("rewards/",),
            eval_scores="pairs",
            data_hint="use preference pairs (prompt/chosen/rejected) for dpo",
            reference_model=True,
        ),
        Method(
            name="kto",
            summary="Kahneman-Tversky optimisation: single answers marked desirable or undesirable (no pairs), "
            "against a frozen reference",
            data_kinds=("unpaired",),
            trl_config="trl.experimental.kto.kto_config:KTOConfig",
            trl_trainer="trl.experimental.kto:KTOTrainer",
            swift_rlhf_type="kto",
            metric_prefixes=(*PAIR_METRICS, "kl", "count/"),
            data_hint="use unpaired answers for kto ({'prompt': ..., 'completion': ..., 'label': true|false}, or "
            "messages ending with the answer + label)",
            reference_model=True,
        ),
        Method(
            name="orpo",
            summary="odds-ratio preference optimisation: SFT on the chosen answer plus an odds-ratio term, "
            "no reference model",
            data_kinds=("preference",),
            trl_config="trl.experimental.orpo.orpo_config:ORPOConfig",
            trl_trainer="trl.experimental.orpo:ORPOTrainer",
            swift_rlhf_type="orpo",
            metric_prefixes=(*PAIR_METRICS, "nll_loss", "log_odds_ratio", "log_odds_chosen"),
            eval_scores="pairs",
            data_hint="use preference pairs (prompt/chosen/rejected) for orpo",
        ),
        Method(
            name="simpo",
            summary="simple preference optimisation: length-normalised reward margin, no reference model",
            data_kinds=("preference",),
            trl_config="trl.experimental.cpo.cpo_config:CPOConfig",
            trl_trainer="trl.experimental.cpo:CPOTrainer",
            swift_rlhf_type="simpo",  # ms-swift runs it as cpo with loss_type simpo
            metric_prefixes=(*PAIR_METRICS, "nll_loss"),
            eval_scores="pairs",
            data_hint="use preference pairs (prompt/chosen/rejected) for simpo",
        ),
        Method(
            name="reward",
            summary="reward-model training: a scalar score head learns to rank each chosen answer above its "
            "rejected one (the model then scores text; it does not generate)",
            data_kinds=("preference",),
            trl_config="trl.trainer.reward_config:RewardConfig",
            trl_trainer="trl:RewardTrainer",
            swift_rlhf_type="rm",
            metric_prefixes=("rewards/", "mean_reward", "min_reward", "max_reward", "center_rewards_loss"),
            eval_scores="score_head",
            data_hint="use preference pairs (prompt/chosen/rejected) for reward",
            scores_text=True,
        ),
        Method(
            name="grpo",
            summary="group relative policy optimisation: the model answers each prompt several times and "
            "learns from reward functions, no answers in the data",
            data_kinds=("prompt",),
            trl_config="trl.trainer.grpo_config:GRPOConfig",
            trl_trainer="trl:GRPOTrainer",
            swift_rlhf_type="grpo",
            metric_prefixes=("reward", "kl", "completions/", "frac_reward_zero_std", "entropy", "clip_ratio"),
            eval_scores="rewards",
            data_hint="use prompt rows for grpo ({'prompt': ..., plus columns such as 'answer' for the rewards})",
            trl_max_length=False,
        ),
    )
}


# trainer log keys that mean the same as another backend's: stored under one name in metrics.jsonl
METRIC_ALIASES = {"accuracy": "rewards/accuracies", "margin": "rewards/margins"}  # trl's RewardTrainer


def method(name: str) -> Method:
    return METHODS[name]


def names() -> tuple[str, ...]:
    return tuple(METHODS)


def names_for_kind(kind: str) -> tuple[str, ...]:
    return tuple(name for name, entry in METHODS.items() if kind in entry.data_kinds)
