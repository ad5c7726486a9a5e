"""A completed run folder as a model to use: the base it was trained from, the adapter (or full weights) it
wrote, the chat template it trained with. `unify chat`, `unify eval` and `unify export` open runs through this,
whichever backend trained them."""

from __future__ import annotations

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
            raise UserError(f"{folder.root}: no such folder", hint="give a run folder written by `unify run`")
        record = folder.read_record()
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
        if not (run.weights / ("adapter_config.json" if run.is_adapter else "config.json")).is_file():
            raise UserError(f"{run.weights}: the trained weights are missing from the run folder")
        return run

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
        from .builtin import chat_template_path

        path = chat_template_path(self.spec.model.chat_template)
        return Path(path).read_text(encoding="utf-8") if path else None


def load_model(run: TrainedRun | None, *, tuned: bool = True, model_ref: str | None = None):
    """(model, tokenizer) in eval mode: the run's tuned model (base + adapter, or its full weights), the run's
    base (tuned=False), or a base model by name (model_ref, with the ChatML template unless it has its own)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if run is None:
        from .builtin import ensure_model
        from .model_info import read_model_info

        ensure_model(model_ref)
        location, dtype, revision, trust, template = (
            read_model_info(model_ref).location,
            "float32",
            None,
            False,
            None,
        )
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
) -> str:
    """One assistant answer: greedy at temperature 0 (so the same run prints the same text), sampled otherwise,
    seeded either way."""
    import torch
    from transformers import set_seed

    set_seed(seed)
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
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
