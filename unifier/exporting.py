"""`unify export RUN_DIR --format merged|gguf`: the run's model for serving, after the fact.

merged: the base with the run's adapter merged in, the merge every backend uses at training time
(backends/inline_library.merge_adapter: the base in model.dtype, for QLoRA the 16-bit base, not re-quantized).
gguf: that merged model converted by llama.cpp's own converter (convert_hf_to_gguf.py with its gguf-py, from
LLAMA_CPP_DIR or the copy `make setup` puts in the environment's share/llama.cpp), for llama.cpp, Ollama and
LM Studio. Every export is written into a sibling temporary folder and renamed into place, so the target is
complete or absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import UserError
from .runfolder import scratch_folder
from .trained import TrainedRun

FORMATS = ("merged", "gguf")
DTYPES = ("float32", "bfloat16", "float16")
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
GGUF_ARCHITECTURES = ("qwen2", "qwen3", "llama")  # what the recipes train (the converter knows many more)
# models whose tokenizer llama.cpp does not recognise by its hash, and the pre-tokenizer they do use
KNOWN_PRETOKENIZERS = {"builtin:tiny-qwen2": "qwen2"}  # Qwen2's split regex and NFC (unifier/tiny.py)
OWNED_MARK = ".unifier-export"


def export(
    run_dir: str | Path,
    fmt: str = "merged",
    *,
    output: str | Path | None = None,
    dtype: str | None = None,
    quant: str = "q8_0",
    force: bool = False,
) -> Path:
    """Write the export; returns its folder (default RUN_DIR/export/<format>)."""
    if fmt not in FORMATS:
        raise UserError(f"--format '{fmt}': expected one of {', '.join(FORMATS)}")
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"--dtype '{dtype}': expected one of {', '.join(DTYPES)}")
    if fmt == "gguf" and quant not in GGUF_TYPES:
        raise UserError(f"--quant '{quant}': expected one of {', '.join(GGUF_TYPES)}")
    run = TrainedRun.open(run_dir)
    run.require_generation("export as a merged or GGUF model")
    converter = _checked_for_gguf(run) if fmt == "gguf" else None
    target = Path(output).absolute() if output else run.folder.export(fmt)
    from .runlock import RunLock

    with RunLock(
        run.folder.lock
    ):  # one writer: a second export (or a run, or an eval) of this folder waits out
        _check_target(target, force)
        created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"{target.parent}: cannot create the export's folder ({exc.strerror or exc})"
            ) from None
        partial = scratch_folder(target.parent, f".{target.name}.", ".partial")
        try:
            if converter is None:
                _write_merged(run, partial, dtype or run.spec.model.dtype)
            else:
                _write_gguf(run, partial, converter, quant)
            (partial / OWNED_MARK).write_text(f"{fmt} export of {run.folder.root}\n", encoding="utf-8")
            if target.exists():
                shutil.rmtree(target)
            partial.rename(target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
            for folder in created:  # an export that failed leaves no empty folder behind
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
    return target


def _check_target(target: Path, force: bool) -> None:
    if target.exists() and not target.is_dir():
        raise UserError(f"{target}: a file is in the way", hint="give another --output")
    blocking = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise UserError(f"{blocking}: a file, not a folder (in --output {target})")
    if target.exists():
        owned = (target / OWNED_MARK).is_file()
        if not force or not owned:
            raise UserError(
                f"{target}: already exists",
                hint="pass --force to replace an export unifier wrote"
                if owned
                else "give another --output (unifier replaces only an export it wrote)",
            )


def _write_merged(run: TrainedRun, folder: Path, dtype: str) -> None:
    from transformers import AutoTokenizer

    from .backends.inline_library import merge_adapter

    m = run.spec.model
    if run.is_adapter:
        merge_adapter(run.base, m.revision, m.trust_remote_code, dtype, str(run.weights), str(folder))
    else:  # full fine-tuning: the weights are the model; saved again in the asked dtype
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            str(run.weights), dtype=getattr(torch, dtype), trust_remote_code=m.trust_remote_code
        )
        model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(
        run.base if run.is_adapter else str(run.weights),
        revision=m.revision if run.is_adapter else None,
        trust_remote_code=m.trust_remote_code,
    )
    template = run.chat_template()
    if template:
        tokenizer.chat_template = template
    tokenizer.save_pretrained(str(folder))


def llama_cpp_converter() -> Path:
    """llama.cpp's convert_hf_to_gguf.py: from LLAMA_CPP_DIR (a llama.cpp checkout) or share/llama.cpp."""
    candidates = [Path(os.environ["LLAMA_CPP_DIR"])] if os.environ.get("LLAMA_CPP_DIR") else []
    candidates.append(Path(sys.prefix) / "share" / "llama.cpp")
    for folder in candidates:
        if (folder / "convert_hf_to_gguf.py").is_file() and (folder / "gguf-py").is_dir():
            return folder / "convert_hf_to_gguf.py"
    raise UserError(
        "--format gguf needs llama.cpp's converter (convert_hf_to_gguf.py and gguf-py), not found in "
        + " or ".join(str(c) for c in candidates),
        hint="set LLAMA_CPP_DIR to a llama.cpp checkout, or run `make setup` (it copies the converter into "
        "the environment)",
    )


def _checked_for_gguf(run: TrainedRun) -> Path:
    from .model_info import read_model_info

    model_type = read_model_info(run.spec.model.name_or_path, run.spec.model.revision).model_type
    if model_type not in GGUF_ARCHITECTURES:
        raise UserError(
            f"--format gguf: {run.spec.model.name_or_path} is a '{model_type}' model; unifier converts "
            f"{', '.join(GGUF_ARCHITECTURES)}",
            hint="export --format merged and convert it with llama.cpp's convert_hf_to_gguf.py yourself",
        )
    return llama_cpp_converter()


def _write_gguf(run: TrainedRun, folder: Path, converter: Path, quant: str) -> None:
    """Merge into a scratch folder, then llama.cpp's converter writes model.gguf (its output: convert.log)."""
    with tempfile.TemporaryDirectory(dir=folder) as scratch:  # inside the partial folder: removed with it
        merged = Path(scratch) / "hf-model"  # the merged model the converter reads
        _write_merged(run, merged, "float32" if quant == "f32" else run.spec.model.dtype)
        pre = KNOWN_PRETOKENIZERS.get(run.spec.model.name_or_path, "")
        command = [sys.executable, "-c", CONVERT, str(converter), pre, str(merged)]
        command += ["--outfile", str(folder / "model.gguf"), "--outtype", quant]
        result = subprocess.run(command, capture_output=True, text=True)
        (folder / "convert.log").write_text(result.stdout + result.stderr, encoding="utf-8")
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if line.strip()][-12:]
            raise UserError(
                f"llama.cpp's converter refused the model (exit code {result.returncode}):\n  "
                + "\n  ".join(lines or ["(it printed nothing)"]),
                hint="`unify export --format merged` works for any model",
            )
        _check_gguf_tokenizer(folder / "model.gguf", merged / "tokenizer.json", result.stdout)


def _check_gguf_tokenizer(gguf_file: Path, tokenizer_json: Path, converter_output: str) -> None:
    """Never a file llama.cpp cannot load: a byte-level BPE tokenizer (Llama 3, Qwen) must become llama.cpp's
    'gpt2' tokenizer, not its SentencePiece layout ('llama', which llama.cpp aborts on for such a vocabulary);
    where llama.cpp's bindings are installed, the file's vocabulary is loaded in a separate process too."""
    import json

    written = next(
        (
            json.loads(line.split(" ", 1)[1])
            for line in converter_output.splitlines()
            if line.startswith("UNIFIER_GGUF ")
        ),
        {},
    )
    try:
        pre_tokenizer = json.dumps(
            json.loads(tokenizer_json.read_text(encoding="utf-8")).get("pre_tokenizer")
        )
    except (OSError, ValueError):
        pre_tokenizer = ""
    if '"ByteLevel"' in pre_tokenizer and written.get("model") not in (None, "gpt2"):
        raise UserError(
            f"--format gguf: llama.cpp's converter wrote the byte-level BPE tokenizer as '{written['model']}' "
            f"(pre-tokenizer '{written.get('pre')}'), a layout llama.cpp cannot load for this vocabulary; no file "
            "was kept",
            hint="check the model folder's tokenizer.json (a byte-level BPE must not claim byte_fallback), or "
            "export --format merged",
        )
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return
    probe = "import sys; from llama_cpp import Llama; Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)"
    loaded = subprocess.run([sys.executable, "-c", probe, str(gguf_file)], capture_output=True, text=True)
    if loaded.returncode != 0:
        tail = [line for line in loaded.stderr.splitlines() if line.strip()][-3:]
        raise UserError(
            "--format gguf: llama.cpp cannot load the converted file's vocabulary ("
            + (" ".join(tail) or f"exit code {loaded.returncode}")
            + "); no file was kept",
            hint="export --format merged and convert it with a newer llama.cpp",
        )


# llama.cpp's converter run as its own script; for a tokenizer it does not know by its hash (the tiny model's),
# the pre-tokenizer the tokenizer does use is named instead of refusing
CONVERT = """
import runpy, sys
converter, pre = sys.argv[1], sys.argv[2]
root = converter.rsplit("/", 1)[0]
sys.path[:0] = [root, root + "/gguf-py"]
try:
    import conversion.base as base  # llama.cpp's converter since it was split into a package
except ImportError:
    base = None
if base is not None and pre:
    known = base.TextModel.get_vocab_base_pre
    def get_vocab_base_pre(self, tokenizer):
        try:
            return known(self, tokenizer)
        except NotImplementedError:
            return pre
    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
sys.argv = [converter, *sys.argv[3:]]
runpy.run_path(converter, run_name="__main__")
import json
from gguf import GGUFReader
fields = GGUFReader(sys.argv[sys.argv.index("--outfile") + 1]).fields
read = lambda key: bytes(fields[key].parts[-1]).decode() if key in fields else None
print("UNIFIER_GGUF " + json.dumps({"model": read("tokenizer.ggml.model"), "pre": read("tokenizer.ggml.pre")}))
"""
