"""`unify demo`: the embedded default end to end, on CPU, in well under a minute."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from .builtin import ASSETS
from .runfolder import RunFolder
from .spec import load_spec

PROMPT = "What is the capital of France?"


def run_demo(backend: str, output: Path, console: Console) -> None:
    from .core import run
    from .tiny import ensure_tiny_model

    recipe = ASSETS.parent.parent / "recipes" / "tiny-cpu-sft.yaml"
    if not recipe.is_file():  # installed without the repository: the starter recipe is the same job
        recipe = ASSETS / "starter_recipe.yaml"
    spec = load_spec(
        recipe, [f"output.dir={output}", "output.if_exists=overwrite", "name=demo", "training.max_steps=300"]
    )
    console.print("[bold]1.[/] building the tiny local model (2-layer Qwen2, byte-level BPE, ChatML) ...")
    model_dir = ensure_tiny_model()
    before = generate(model_dir, None, PROMPT)
    console.print(f"[bold]2.[/] fine-tuning with LoRA on the bundled chat data ({backend}, CPU) ...")
    outcome = run(spec, backend, recipe=str(recipe), quiet=True)
    losses = outcome.losses
    table = Table(title="training loss")
    table.add_column("step", justify="right")
    table.add_column("loss", justify="right")
    for step, loss in [(m["step"], m["loss"]) for m in outcome.metrics if m.get("loss") is not None][
        :: max(1, len(losses) // 10)
    ]:
        table.add_row(str(step), f"{loss:.4f}")
    console.print(table)
    console.print(
        f"loss {losses[0]:.4f} -> {losses[-1]:.4f} ({'falling' if losses[-1] < losses[0] else 'NOT falling'})"
    )
    after = generate(model_dir, RunFolder(outcome.run_dir).adapter, PROMPT)
    console.print(f"[bold]3.[/] generation for {PROMPT!r}")
    console.print(f"  before: {before!r}")
    console.print(f"  after:  {after!r}")
    from .evaluation import evaluate

    report = evaluate(outcome.run_dir, data=[str(ASSETS / "tiny_chat.jsonl")], samples=0)
    base, tuned = report["task"]["base"], report["task"]["tuned"]
    console.print(
        f"[bold]4.[/] `unify eval` on the bundled chat rows (the data it trained on): loss {base['loss']:.3f} -> "
        f"{tuned['loss']:.3f}, perplexity {base['perplexity']:.1f} -> {tuned['perplexity']:.1f}"
    )
    console.print(f"run folder: {outcome.run_dir} (run.json, metrics.jsonl, adapter/, loss.png, eval/)")


def generate(model_dir: Path, adapter_dir: Path | None, prompt: str, max_new_tokens: int = 16) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
