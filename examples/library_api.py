"""unifier as a library: load a recipe, look at the native plan, train, and read the results back.

    python examples/library_api.py [RUN_FOLDER]

Trains the tiny built-in model for 20 steps on CPU with the peft backend (about 15 s), then prints the
loss curve from the run folder. Change `backend=` to "swift" or "unsloth" for the same job elsewhere.
"""

import sys
from pathlib import Path

import unifier

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "tiny-cpu-sft.yaml"


def main(run_folder: str) -> None:
    spec = unifier.load_spec(
        RECIPE, overrides=["training.max_steps=20", f"output.dir={run_folder}", "output.if_exists=overwrite"]
    )
    print(f"recipe: {spec.name}, {spec.adapter.type} r={spec.adapter.r}, lr={spec.training.learning_rate}")

    plan = unifier.plan(spec, backend="swift")  # pure: nothing is installed, read or written
    print("ms-swift would run:\n" + "\n".join(plan.render().splitlines()[:4]) + "\n    ...")

    try:
        outcome = unifier.run(spec, backend="peft")
    except unifier.UserError as error:  # a mistake in the recipe or data: a message, never a traceback
        sys.exit(f"error: {error}")
    record = unifier.read_run(outcome.run_dir)
    print(
        f"status: {record['status']}, backend: {record['backend']}, "
        f"steps: {record['final_metrics']['steps']}, loss {outcome.losses[0]:.3f} -> {outcome.losses[-1]:.3f}"
    )
    print(f"adapter: {outcome.run_dir / 'adapter'}")

    answer = unifier.generate(outcome.run_dir, "What is the capital of France?", max_new_tokens=16)
    print(f"tuned answer: {answer!r}")
    report = unifier.evaluate(
        outcome.run_dir, data=[str(RECIPE.parent.parent / "unifier/assets/tiny_chat.jsonl")]
    )
    print(
        f"task loss: base {report['task']['base']['loss']:.3f} -> tuned {report['task']['tuned']['loss']:.3f}"
    )
    print(f"merged model: {unifier.export(outcome.run_dir, force=True)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/library-example")
