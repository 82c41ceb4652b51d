"""Running the stage graph: one process per stage with its log, markers that skip finished stages and resume
unfinished ones, free ports for concurrent `accelerate launch`es, and at most `max_parallel` stages at once with their
thread counts capped.

A single-process stage runs in a process forked from a long-lived server that imported torch, transformers, TRL and
the recipes once (Python's `forkserver`, `StageWorkers`), instead of a fresh `python` that spends ~10 s importing
them. Each stage is still its own process with its own log: one that fails or aborts cannot take the others down.
Launched stages (`accelerate launch ...`) run as subprocesses.
"""

import json
import multiprocessing
import os
import runpy
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..recipe_kit.recipe import RECIPES_DIR, resolve_config


if TYPE_CHECKING:
    from .graph import Stage


MARKER = ".density_rlhf_stage.json"
# The recipes that train, and so take `--resume_from_checkpoint`.
TRAINING_SCRIPTS = ("train_sft.py", "train_rm.py", "train_grpo.py", "train_dpo.py", "train_kto.py", "train_rloo.py")


# The modules the stage server imports once; each stage process is forked from it with them loaded.
PRELOAD = (
    "torch",
    "transformers",
    "faiss",
    "sentence_transformers",
    *(f"density_rlhf.recipes.{name}" for name in (
        "prepare_data", "build_density", "train_sft", "train_rm", "train_grpo", "evaluate", "density_report"
    )),
)  # fmt: skip


class StageFailed(RuntimeError):
    pass


def _stage_process(script: str, argv: list[str], log: str, env: dict[str, str], threads: int) -> None:
    """The body of a forked stage process: output to the stage's log, the stage's environment and thread count,
    then the recipe as `__main__` (its exit status is the process's)."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)
    os.environ.clear()
    os.environ.update(env)
    if threads:
        import torch

        torch.set_num_threads(threads)
        if "faiss" in sys.modules:
            sys.modules["faiss"].omp_set_num_threads(threads)
    sys.argv = [script, *argv]
    sys.path.insert(0, str(Path(script).parent))  # as `python script.py` does
    runpy.run_path(script, run_name="__main__")


class StageWorkers:
    """Runs single-process stages in processes forked from one server that imported `PRELOAD` once."""

    def __init__(self):
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(list(PRELOAD))

    @staticmethod
    def available() -> bool:
        return "forkserver" in multiprocessing.get_all_start_methods()

    def run(self, command: list[str], log: Path, env: dict[str, str], threads: int) -> int:
        """Run `command` (`python script args...`) in a forked stage process; its exit status (negative: the
        signal that ended it)."""
        process = self.context.Process(
            target=_stage_process, args=(command[1], command[2:], str(log), env, threads), daemon=False
        )
        process.start()
        process.join()
        return process.exitcode


def free_port() -> int:
    """A TCP port free on this machine now (for `accelerate launch --main_process_port`)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _command(stage: "Stage", launcher: str, own_port: bool = False) -> list[str]:
    """The stage's command line; with `own_port`, an `accelerate launch` without `--main_process_port` gets a free
    port of its own (two stages running at once would otherwise both bind the default 29500)."""
    script = str(RECIPES_DIR / stage.script)
    config = ["--config", resolve_config(stage.config)] if stage.config else []
    prefix = shlex.split(launcher) if launcher and stage.launched else [sys.executable]
    sibling = Path(sys.executable).parent / prefix[0]
    if shutil.which(prefix[0]) is None and sibling.exists():  # `accelerate` of this venv when it is not activated
        prefix[0] = str(sibling)
    if own_port and "launch" in prefix and not any(w.startswith("--main_process_port") for w in prefix):
        at = prefix.index("launch") + 1
        prefix[at:at] = ["--main_process_port", str(free_port())]
    # A training stage resumes its own checkpoints (the recipes resume only when asked); none there: it starts anew.
    resume = ["--resume_from_checkpoint", "true"] if stage.script in TRAINING_SCRIPTS else []
    return [*prefix, script, *config, *stage.args, *resume]


def run_stage(
    stage: "Stage",
    launcher: str,
    log_dir: Path,
    index: int,
    total: int,
    threads: int = 0,
    workers: StageWorkers | None = None,
) -> dict[str, Any]:
    """Run one stage unless it already finished with this configuration; raise `StageFailed` naming stage and log.
    With `workers`, a stage that is not launched runs in a forked stage process (`StageWorkers`).

    The marker records the configuration hash when the stage starts and `done` when it finishes. A finished stage
    with the same hash is skipped; an unfinished one with the same hash resumes from its own checkpoints; output
    left by another configuration is removed first, so no stale checkpoint is resumed.
    """
    marker = stage.output / MARKER
    previous = json.loads(marker.read_text()) if marker.exists() else None
    if previous and previous.get("hash") == stage.hash and previous.get("status") == "done":
        print(f"[{index}/{total}] {stage.name}: up to date, skipped", flush=True)
        return {"stage": stage.name, "skipped": True, **previous}
    if previous and previous.get("hash") != stage.hash:
        shutil.rmtree(stage.output)
    log = log_dir / f"{stage.name.replace('[', '_').replace(']', '').replace('=', '')}.log"
    command = _command(stage, launcher, own_port=True)
    resuming = previous is not None and previous.get("hash") == stage.hash
    print(f"[{index}/{total}] {stage.name}: {'resuming' if resuming else 'running'} (log: {log})", flush=True)
    stage.output.mkdir(parents=True, exist_ok=True)
    info = {"hash": stage.hash, "command": shlex.join(command), "status": "running"}
    marker.write_text(json.dumps(info, indent=2) + "\n")
    start = time.time()
    forked = workers is not None and command[0] == sys.executable
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads:  # concurrent stages share the cores instead of oversubscribing them
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log, "a" if resuming else "w") as f:
        f.write(shlex.join(command) + ("  # in a forked stage process" if forked else "") + "\n\n")
        f.flush()
        if forked:
            returncode = workers.run(command, log, env, threads)
        else:
            returncode = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.time() - start
    if returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise StageFailed(f"stage {stage.name} failed (exit {returncode}); log: {log}\n" + "\n".join(tail))
    info.update(status="done", seconds=round(seconds, 1))
    marker.write_text(json.dumps(info, indent=2) + "\n")
    print(f"[{index}/{total}] {stage.name}: done in {seconds:.0f}s", flush=True)
    return {"stage": stage.name, "skipped": False, **info}


def run_all(
    stages: list["Stage"], launcher: str, log_dir: Path, max_parallel: int, stage_workers: bool = True
) -> list[dict[str, Any]]:
    """Run the stages, up to `max_parallel` at once as their dependencies finish; the first failure stops new
    stages, lets the running ones finish, and is raised. `stage_workers` forks single-process stages from one
    server with the imports done (`StageWorkers`), where the platform has `forkserver`."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    workers = StageWorkers() if stage_workers and StageWorkers.available() else None
    cores = os.cpu_count() or 1
    threads = max(1, cores // max_parallel) if max_parallel > 1 else 0
    order = {id(stage): i for i, stage in enumerate(stages, start=1)}
    done: set[int] = set()
    pending, running, timings = list(stages), {}, []
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_parallel) as pool:
        while pending or running:
            ready = [s for s in pending if all(id(d) in done for d in s.deps)] if failure is None else []
            for stage in ready[: max_parallel - len(running)]:
                pending.remove(stage)
                # the last stage (usually the final evaluation) would leave cores idle: it gets them all
                alone = threads and not running and not pending
                future = pool.submit(
                    run_stage,
                    stage,
                    launcher,
                    log_dir,
                    order[id(stage)],
                    len(stages),
                    cores if alone else threads,
                    workers,
                )
                running[future] = stage
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                stage = running.pop(future)
                try:
                    timings.append(future.result())
                    done.add(id(stage))
                except BaseException as err:  # noqa: BLE001 - re-raised below once the running stages end
                    failure = failure or err
    if failure is not None:
        raise failure
    return sorted(timings, key=lambda t: [s.name for s in stages].index(t["stage"]))
