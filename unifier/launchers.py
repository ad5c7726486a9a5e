"""Starting a multi-node job on a cluster: `unify plan RECIPE --launcher slurm|torchrun [--write DIR]`.

Every node runs the same `unify run` with its own compute.node_rank (unifier.running: node 0 claims and prepares
the shared run folder, the others wait for it; torchrun then starts compute.nproc_per_node processes per node,
and the rank check compares every rank's weights). These are pure functions of the spec and the command line:
nothing is imported beyond the plan.

slurm     one sbatch script: the master address is the first host of the allocation (`scontrol show hostnames`),
          `srun` starts one task per node, and each task passes Slurm's SLURM_NODEID / SLURM_NNODES on as the
          node's rank and the node count
torchrun  one command per node (`unify run ... --set compute.node_rank=N`), each with the native command
          unifier starts on that node as a comment
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .spec import JobSpec

LAUNCHERS = ("slurm", "torchrun")
MARKER = "# written by `unify plan --launcher"  # a launch file unifier may replace


@dataclass(frozen=True)
class LaunchFile:
    name: str  # file name under --write DIR
    text: str
    executable: bool = True


def unify_command(recipe: Path, backend: str, overrides: list[str]) -> list[str]:
    """`unify run` of this installation (the same path on every node: a shared filesystem or image)."""
    sets = [part for item in overrides for part in ("--set", item)]
    return [sys.executable, "-m", "unifier.cli", "run", str(recipe.absolute()), "--backend", backend, *sets]


def launch_files(
    launcher: str, spec: JobSpec, backend: str, recipe: Path, overrides: list[str]
) -> list[LaunchFile]:
    if launcher not in LAUNCHERS:
        raise UserError(f"--launcher {launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    if spec.compute.world_size == 1:
        raise UserError(
            "--launcher: the recipe trains one process (compute.nproc_per_node x nnodes = 1)",
            hint="set compute.nnodes (and compute.nproc_per_node) for a multi-node job",
        )
    if spec.compute.node_rank != 0:
        raise UserError("--launcher: compute.node_rank is set per node by the launcher; leave it 0")
    command = unify_command(recipe, backend, overrides)
    if launcher == "slurm":
        return [LaunchFile(f"{spec.name}.sbatch", slurm_script(spec, command))]
    return torchrun_files(spec, backend, command)


def slurm_script(spec: JobSpec, command: list[str]) -> str:
    c = spec.compute
    gpus = [] if c.device == "cpu" else [f"#SBATCH --gpus-per-node={c.nproc_per_node}"]
    node = (
        'exec "$@" --set compute.nnodes="$SLURM_NNODES" --set compute.node_rank="$SLURM_NODEID" '
        '--set compute.master_addr="$MASTER_ADDR" --set compute.master_port="$MASTER_PORT"'
    )
    lines = [
        "#!/usr/bin/env bash",
        f"#SBATCH --job-name={spec.name}",
        f"#SBATCH --nodes={c.nnodes}",
        "#SBATCH --ntasks-per-node=1",
        *gpus,
        f"#SBATCH --chdir={shlex.quote(str(Path.cwd()))}",  # relative paths of the recipe resolve as here
        f"{MARKER} slurm`: submit with `sbatch {spec.name}.sbatch`",
        f"# one `unify run` per node ({c.nproc_per_node} training processes each, {c.world_size} in all);",
        f"# output.dir ({spec.output.dir}) and this Python must be on a filesystem every node shares",
        "set -euo pipefail",
        'export MASTER_ADDR="${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}"',
        f'export MASTER_PORT="${{MASTER_PORT:-{c.master_port}}}"',
        f"srun --nodes={c.nnodes} --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c {shlex.quote(node)} node \\",
        "    " + " ".join(shlex.quote(part) for part in command),
    ]
    return "\n".join(lines) + "\n"


def torchrun_files(spec: JobSpec, backend: str, command: list[str]) -> list[LaunchFile]:
    from .core import plan

    c = spec.compute
    files = []
    for rank in range(c.nnodes):
        node = spec.model_copy(update={"compute": c.model_copy(update={"node_rank": rank})})
        the_plan = plan(node, backend)
        native = native_command(the_plan)
        loopback = c.master_addr in ("127.0.0.1", "localhost") and c.nnodes > 1
        lines = [
            "#!/usr/bin/env bash",
            f"{MARKER} torchrun`: node {rank} of {c.nnodes}"
            + (" (the master: compute.master_addr names this host)" if rank == 0 else ""),
            *(
                [
                    f"# compute.master_addr is {c.master_addr}: every node must reach node 0 there (set it to node 0's address)"
                ]
                if loopback
                else []
            ),
            f"cd {shlex.quote(str(Path.cwd()))}  # relative paths of the recipe resolve as here",
            "# what unifier starts on this node:",
            *(f"#   {line}" for line in native.splitlines()),
            "set -euo pipefail",
            " ".join(shlex.quote(part) for part in [*command, "--set", f"compute.node_rank={rank}"]),
        ]
        files.append(LaunchFile(f"{spec.name}-node{rank}.sh", "\n".join(lines) + "\n"))
    return files


def native_command(the_plan) -> str:
    from .backends.plan import ScriptProgram, shell_word

    program = the_plan.program
    if isinstance(program, ScriptProgram):
        return " ".join(shell_word(part) for part in program.command())
    return program.render().rstrip("\n")


def render(files: list[LaunchFile]) -> str:
    if len(files) == 1:
        return files[0].text
    return "\n".join(f"# ---- {f.name} ----\n{f.text}" for f in files)


def write(files: list[LaunchFile], folder: Path) -> list[Path]:
    """Into --write DIR; a file there that unifier did not write is never replaced (exit 2, nothing written)."""
    targets = [folder / f.name for f in files]
    for target in targets:
        if target.exists() and MARKER not in target.read_text(encoding="utf-8", errors="replace"):
            raise UserError(
                f"{target}: exists and was not written by `unify plan --launcher`; not replaced",
                hint="choose another --write folder or move the file",
            )
    folder.mkdir(parents=True, exist_ok=True)
    for f, target in zip(files, targets):
        target.write_text(f.text, encoding="utf-8")
        if f.executable:
            target.chmod(0o755)
    return targets
