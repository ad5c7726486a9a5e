"""A completed run folder as a model to use: the base it was trained from, the adapter (or full weights) it
wrote, the chat template it trained with. `unify chat`, `unify eval` and `unify export` open runs through this,
whichever backend trained them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .runfolder import RunFolder
from .spec import JobSpec, spec_from_dict


@dataclass
class TrainedRun:
    folder: RunFolder
    record: dict[str, Any]
    spec: JobSpec

    @classmethod
    def open(cls, run_dir: str | Path) -> TrainedRun:
        folder = RunFolder(Path(run_dir))
        if not folder.root.is_dir():
            what = "a file, not a run folder" if folder.root.exists() else "no such folder"
            raise UserError(f"{folder.root}: {what}", hint="give a run folder written by `unify run`")
        record = folder.read_record()
        if not isinstance(record.get("spec"), dict):
            raise UserError(f"{folder.run_json}: not a unifier run record (no spec)")
        status = record.get("status")
        if status != "completed":
            raise UserError(
                f"{folder.root}: the run is '{status}', not completed",
                hint=f"finish it first (`unify resume {folder.root}`)"
                if status in ("interrupted", "failed", "running")
                else "train it with `unify run`",
            )
        spec = spec_from_dict(record["spec"], source=f"{folder.run_json} (spec)")
        run = cls(folder=folder, record=record, spec=spec)
        config = run.weights / ("adapter_config.json" if run.is_adapter else "config.json")
        if not config.is_file():
            raise UserError(f"{run.weights}: the trained weights are missing from the run folder")
        try:
            json.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UserError(f"{config}: not readable JSON ({exc}); the run folder is damaged") from None
        return run

    def require_generation(self, action: str) -> None:
        """chat / eval / export need a model that writes text; a reward model (training.method: reward) scores it."""
        from .methods import method

        if method(self.spec.training.method).scores_text:
            raise UserError(
                f"{self.folder.root}: a reward model scores text, it does not write any: there is nothing to {action}",
                hint="load it with transformers' AutoModelForSequenceClassification (num_labels=1) and peft's "
                "PeftModel to score text, e.g. inside a GRPO reward function of your own",
            )

    @property
    def is_adapter(self) -> bool:
        return self.spec.adapter.type != "full"

    @property
    def weights(self) -> Path:
        return self.folder.adapter if self.is_adapter else self.folder.model

    @property
    def base(self) -> str:
        from .builtin import ensure_model
        from .model_info import read_model_info

        ensure_model(self.spec.model.name_or_path)
        return read_model_info(self.spec.model.name_or_path, self.spec.model.revision).location

    def chat_template(self) -> str | None:
        """The template the run trained with (its run folder keeps it); None: the tokenizer's own."""
        if self.folder.chat_template.is_file():
            return self.folder.chat_template.read_text(encoding="utf-8")
        from .builtin import chat_template_path

        choice = self.spec.model.chat_template
        path = chat_template_path(choice) if choice not in ("auto", "tokenizer") else None
        return Path(path).read_text(encoding="utf-8") if path else None


def base_model_location(ref: str) -> str:
    """A base model for `unify chat --model`: a builtin, a local folder, or a hub model in the local cache."""
    from .builtin import ensure_model, unknown_builtin
    from .model_info import read_model_info

    problem = unknown_builtin(ref)
    if problem:
        raise UserError(f"--model {ref}: {problem}")
    ensure_model(ref)
    info = read_model_info(ref)
    if not info.is_local or info.config is None:
        raise UserError(
            f"--model {ref}: not a local model folder, and not in the local hub cache",
            hint="give a folder with config.json, or download the model first",
        )
    return info.location


def load_model(run: TrainedRun | None, *, tuned: bool = True, model_ref: str | None = None):
    """(model, tokenizer) in eval mode: the run's tuned model (base + adapter, or its full weights), the run's
    base (tuned=False), or a base model by name (model_ref, with the ChatML template unless it has its own)."""
    if run is not None:
        run.require_generation("chat with or evaluate by its answers")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if run is None:
        location = base_model_location(model_ref)
        dtype, revision, trust, template = "float32", None, False, None
    else:
        m = run.spec.model
        location = str(run.weights) if tuned and not run.is_adapter else run.base
        dtype, revision, trust, template = m.dtype, m.revision, m.trust_remote_code, run.chat_template()
    tokenizer = AutoTokenizer.from_pretrained(location, revision=revision, trust_remote_code=trust)
    if template:
        tokenizer.chat_template = template
    elif tokenizer.chat_template is None:
        from .builtin import chat_template_path

        tokenizer.chat_template = Path(chat_template_path("chatml")).read_text(encoding="utf-8")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = getattr(torch, dtype) if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        location, revision=revision, trust_remote_code=trust, dtype=torch_dtype
    ).to(device)
    if run is not None and tuned and run.is_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(run.weights))
    model.eval()
    return model, tokenizer


def generate(
    model,
    tokenizer,
    messages: list[dict],
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    streamer=None,
    tools: list[dict] | None = None,
) -> str:
    """One assistant answer: greedy at temperature 0 (so the same run prints the same text), sampled otherwise,
    seeded either way."""
    import torch
    from transformers import set_seed

    set_seed(seed)
    inputs = tokenizer.apply_chat_template(
        messages, tools=tools or None, add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(model.device)
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p}
        if temperature > 0
        else {"do_sample": False}
    )
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            streamer=streamer,
            **sampling,
        )
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)


def parse_tool_calls(answer: str) -> list[dict[str, Any]]:
    """The tool calls in an answer, as the chat template writes them (`<tool_call>{"name", "arguments"}
    </tool_call>`, Hermes style); a call that is not valid JSON is kept as {"unparsed": text}."""
    import json

    calls = []
    for raw in TOOL_CALL.findall(answer):
        try:
            call = json.loads(raw)
        except ValueError:
            calls.append({"unparsed": raw})
            continue
        if isinstance(call, dict) and "name" in call:
            calls.append({"name": call["name"], "arguments": call.get("arguments", {})})
        else:
            calls.append({"unparsed": raw})
    return calls
