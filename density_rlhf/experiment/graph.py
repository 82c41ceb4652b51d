"""The experiment's stage graph: the runner's arguments, the stages of every seed (world -> density -> SFT -> RMs ->
GRPO arms -> evaluation) with their commands and configuration hashes, and the checks made before anything runs.

A stage's hash covers its command line, its config's content, the recipe's code, the library's source and the hashes
of the stages it depends on, so a change re-runs exactly what it may affect. Each seed draws its own world
(`world_seed` follows `seed` unless fixed). The arms and their reward models come from `design.py`.
"""

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..recipe_kit.recipe import RECIPES_DIR, check_hardware, load_config, resolve_config
from ..version import __version__
from .design import (
    ARMS,
    HYPOTHESES,
    INDEXES,
    ORACLE,
    REWARD_BASELINES,
    RM_NAMES,
    RM_OF,
    SAMPLERS,
    check_arm_config,
    index_dir,
)


@dataclass
class RunnerArguments:
    r"""
    Arguments of `recipes/run_hypotheses.py`.

    Parameters:
        output_dir (`str`, *optional*, defaults to `"outputs/run"`):
            Root of every stage's output, the logs, `results.json`, `report.md` and the plots.
        seeds (`list[int]`, *optional*, defaults to `[0, 1, 2]`):
            Seeds of every stage: each seed draws its own world (unless `world_seed` is set) and trains on it.
        world_seed (`int` or `None`, *optional*):
            Fix the world across seeds (only training varies); `None` lets the world follow the seed.
        hypotheses (`list[str]`, *optional*, defaults to `["A", "B", "C", "D"]`):
            GRPO arms to run (`A`-`D`, and `K`: cluster-balanced prompts scored by the uniform RM); `A` is always
            included as the baseline.
        reward_baselines (`list[str]`, *optional*, defaults to `[]`):
            Reward models trained only to be compared: `cluster` (k-means clusters balanced) and `topic` (the
            world's true topics balanced), each from `baseline_rm_config`; `uniform` or `density` trains A's or B's
            reward model without its GRPO arm.
        baseline_rm_config (`str`, *optional*, defaults to `"rm_{name}.yaml"`):
            Pattern of their YAMLs (`{name}` is the baseline).
        oracle (`bool`, *optional*, defaults to `True`):
            Run the positive control `O` (GRPO on the ground-truth reward, `oracle_config`).
        oracle_config (`str`, *optional*, defaults to `"hyp_o.yaml"`):
            YAML of the oracle arm (a `grpo:` section).
        max_parallel (`str`, *optional*, defaults to `"auto"`):
            Stages run at once when their inputs are ready (a number, or `auto`: one per core, fewer when memory
            holds less than 2 GiB per stage; `graph.auto_parallel`); each gets `cpu_count // max_parallel`
            threads (a last stage running alone gets every core).
        stage_workers (`bool`, *optional*, defaults to `True`):
            Run single-process stages in processes forked from one server that imported torch, transformers, TRL
            and the recipes once, instead of a fresh `python` per stage (`execution.StageWorkers`); each stage is
            still its own process with its own log.
        prepare_config / density_config / sft_config (`str`, *optional*):
            Recipe YAMLs of the data, density and SFT stages.
        hypothesis_config (`str`, *optional*, defaults to `"hyp_{h}.yaml"`):
            Pattern of the hypothesis YAMLs (`{h}` is the lower-case hypothesis).
        launcher (`str`, *optional*, defaults to `""`):
            Prefix of the training commands, e.g. `accelerate launch --config_file accelerate_configs/zero3.yaml`;
            empty runs `python`.
        n_train_pairs, sft_max_steps, rm_max_steps, grpo_max_steps (`int` or `None`, *optional*):
            Shrink the run (smoke tests); `None` keeps the recipes' values.
        eval_num_samples (`int`, *optional*, defaults to `4`), eval_prompts_per_topic (`int` or `None`):
            Samples per held-out prompt, and unique prompts kept per topic.
        report_to (`str`, *optional*, defaults to `"tensorboard"`):
            Trackers of the training stages (`tensorboard`, `wandb`, `trackio`, `none`).
        overrides (`str` or `None`, *optional*):
            YAML of settings laid over the stage configs without editing them: `launcher`, and per stage
            (`prepare_data`, `build_density`, `sft`, `reward`, `grpo`, `evaluate`) a mapping of fields appended to
            its command line (its `launcher` replaces `launcher`). `recipes/scale/rehearsal_cpu.yaml` rehearses the
            8-GPU run on 2 CPU processes.
        dry_run (`bool`, *optional*, defaults to `False`):
            Print every stage's command and validate each training config as it would be built on the launcher's
            processes (`num_processes`), without running anything or needing a GPU.
        num_processes (`int` or `None`, *optional*):
            Processes to validate for in a dry run; `None` reads `num_processes` from the launcher's
            `--config_file` (1 without a launcher).
        alphas (`list[float]` or `None`, *optional*):
            The alpha dose-response: per alpha and seed, a reward model trained by density^-alpha (the B recipe with
            `density_alpha`, named `density@<alpha>`) and a GRPO arm with prompts weighted at the same alpha and that
            reward model (the D recipe, `D@<alpha>`). The report adds a table and a plot of rare-topic RM accuracy,
            tic effect and tic rate against alpha (exploratory).
    """

    output_dir: str = field(default="outputs/run", metadata={"help": "Root directory of the run."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds (world and training)."})
    world_seed: int | None = field(default=None, metadata={"help": "Fix the world across seeds (default: per seed)."})
    hypotheses: list[str] = field(default_factory=lambda: list(HYPOTHESES), metadata={"help": "GRPO arms to run."})
    reward_baselines: list[str] = field(
        default_factory=list, metadata={"help": f"Baseline reward models to train: {list(REWARD_BASELINES)}."}
    )
    baseline_rm_config: str = field(default="rm_{name}.yaml", metadata={"help": "Pattern of the baseline RM YAMLs."})
    oracle: bool = field(default=True, metadata={"help": "Run the positive control O (ground-truth reward)."})
    oracle_config: str = field(default="hyp_o.yaml", metadata={"help": "YAML of the oracle arm."})
    max_parallel: str = field(
        default="auto", metadata={"help": "Stages run at once: a number, or auto (one per core, memory allowing)."}
    )
    stage_workers: bool = field(
        default=True, metadata={"help": "Fork single-process stages from one server with the imports done."}
    )
    prepare_config: str = field(default="prepare_data.yaml", metadata={"help": "Data stage YAML."})
    density_config: str = field(default="build_density.yaml", metadata={"help": "Density stage YAML."})
    sft_config: str = field(default="sft.yaml", metadata={"help": "SFT stage YAML."})
    hypothesis_config: str = field(default="hyp_{h}.yaml", metadata={"help": "Pattern of the hypothesis YAMLs."})
    launcher: str = field(
        default="", metadata={"help": "Command prefix of the training stages (accelerate launch ...)."}
    )
    n_train_pairs: int | None = field(default=None, metadata={"help": "Override the synthetic train size."})
    sft_max_steps: int | None = field(default=None, metadata={"help": "Override SFT max_steps."})
    rm_max_steps: int | None = field(default=None, metadata={"help": "Override reward-model max_steps."})
    grpo_max_steps: int | None = field(default=None, metadata={"help": "Override GRPO max_steps."})
    eval_num_samples: int = field(default=4, metadata={"help": "Samples per held-out prompt."})
    eval_prompts_per_topic: int | None = field(default=None, metadata={"help": "Unique held-out prompts per topic."})
    report_to: str = field(default="tensorboard", metadata={"help": "Trackers of the training stages."})
    overrides: str | None = field(default=None, metadata={"help": "YAML of per-stage settings laid over the configs."})
    dry_run: bool = field(default=False, metadata={"help": "Print and validate every stage; run nothing."})
    num_processes: int | None = field(
        default=None, metadata={"help": "Processes to validate for in a dry run (default: the launcher's config)."}
    )

    alphas: list[float] | None = field(
        default=None, metadata={"help": "alpha dose-response: an RM and a GRPO arm weighted at each alpha."}
    )

    def __post_init__(self):
        if self.alphas is not None and (not self.alphas or any(not a >= 0 for a in self.alphas)):
            raise ValueError(f"alphas must be non-negative numbers, got {self.alphas}.")
        if self.alphas is not None and len(set(self.alphas)) != len(self.alphas):
            raise ValueError(f"alphas must be distinct, got {self.alphas}.")
        self.hypotheses = [h.upper() for h in self.hypotheses]
        unknown = sorted(set(self.hypotheses) - set(ARMS))
        if unknown:
            raise ValueError(f"unknown hypotheses {unknown}; choose from {list(ARMS)}.")
        known = [*RM_NAMES.values(), *REWARD_BASELINES]
        unknown = sorted(set(self.reward_baselines) - set(known))
        if unknown:
            raise ValueError(f"unknown reward_baselines {unknown}; choose from {known}.")
        if "A" not in self.hypotheses:
            self.hypotheses.insert(0, "A")  # the baseline every comparison is made against
        if not self.seeds:
            raise ValueError("seeds must not be empty.")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}.")
        self.max_parallel = parse_max_parallel(self.max_parallel)
        self.stage_overrides = load_overrides(self.overrides) if self.overrides else {}
        if "launcher" in self.stage_overrides:
            self.launcher = self.stage_overrides.pop("launcher")


# Memory budgeted per stage when `auto` sets the number of stages: a bound chosen for the tiny stages, not a measured
# peak (a forked stage shares the server's imported pages until it writes them).
STAGE_MEMORY_BYTES = 2 * 1024**3


def auto_parallel(cores: int | None = None, memory_bytes: int | None = None) -> int:
    """Stages to run at once for `max_parallel: auto`: one per core (each with one thread), fewer when the memory
    does not hold `STAGE_MEMORY_BYTES` per stage."""
    cores = cores or os.cpu_count() or 1
    if memory_bytes is None:
        try:
            memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # not POSIX: cores alone decide
            memory_bytes = cores * STAGE_MEMORY_BYTES
    return max(1, min(cores, memory_bytes // STAGE_MEMORY_BYTES))


def parse_max_parallel(value: int | str) -> int:
    """`max_parallel` as a number of stages: `auto` is `auto_parallel()`."""
    if value == "auto":
        return auto_parallel()
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or number < 1 or str(number) != str(value).strip():
        raise ValueError(f"max_parallel must be `auto` or an integer >= 1, got {value!r}.")
    return number


@dataclass
class Stage:
    name: str
    script: str
    config: str | None
    section: str | None
    args: list[str]
    output: Path
    deps: list["Stage"] = field(default_factory=list)
    launched: bool = False  # goes through `launcher` (training stages)
    arm: str | None = None  # the design's arm whose `section` this stage trains (`design.DENSITY_SAMPLING`)

    @property
    def hash(self) -> str:
        """Changes with the recipe's code, the library's source, the config's content (not just its name), the
        arguments and any upstream stage."""
        config = load_config(resolve_config(self.config), self.section) if self.config else None
        code = hashlib.sha256((RECIPES_DIR / self.script).read_bytes()).hexdigest()
        payload = json.dumps(
            [self.script, code, library_source_hash(), config, self.args, [d.hash for d in self.deps]],
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@functools.cache
def library_source_hash() -> str:
    """sha256 over the package's Python sources and version: a code change re-runs the stages it may affect."""
    package = Path(__file__).resolve().parent.parent  # density_rlhf, library and experiment
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _fmt(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


OVERRIDE_SECTIONS = ("prepare_data", "build_density", "sft", "reward", "grpo", "evaluate")


def load_overrides(path: str) -> dict[str, Any]:
    """The overrides file: `launcher` and one mapping of fields per stage kind (`OVERRIDE_SECTIONS`)."""
    import yaml

    config = yaml.safe_load(Path(resolve_config(path)).read_text()) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path} must contain a YAML mapping.")
    unknown = sorted(set(config) - {"launcher", *OVERRIDE_SECTIONS})
    if unknown:
        raise ValueError(
            f"{path}: unknown keys {unknown}; use `launcher` and stage sections {list(OVERRIDE_SECTIONS)}."
        )
    for name in OVERRIDE_SECTIONS:
        if not isinstance(config.get(name, {}), dict):
            raise ValueError(f"{path}: section `{name}:` must be a mapping of config fields.")
    return config


def _flags(settings: dict[str, Any]) -> list[str]:
    flags = []
    for key, value in settings.items():
        values = value if isinstance(value, list) else [value]
        flags += [f"--{key}", *(_fmt(v) for v in values)]
    return flags


def _uses_tiny_models(args: RunnerArguments) -> bool:
    """The data stage writes the tiny offline models (`tiny_models`, after overrides): the stages train those."""
    config = load_config(resolve_config(args.prepare_config))
    return bool(args.stage_overrides.get("prepare_data", {}).get("tiny_models", config.get("tiny_models", True)))


def check_shared_reward_models(args: RunnerArguments) -> None:
    """C and K reuse A's reward model and D reuses B's: their `reward:` sections must configure the same training (up
    to `output_dir`), or the runner would silently ignore theirs."""
    for h in args.hypotheses:
        if RM_OF[h] == h:
            continue
        own, shared = (
            load_config(resolve_config(args.hypothesis_config.format(h=x.lower())), "reward") for x in (h, RM_OF[h])
        )
        differ = sorted(k for k in set(own) | set(shared) if k != "output_dir" and own.get(k) != shared.get(k))
        if differ:
            raise ValueError(
                f"hypothesis {h} reuses {RM_OF[h]}'s reward model, but the `reward:` sections differ in {differ}; make "
                f"them equal, or train {h}'s reward model by hand with recipes/train_rm.py."
            )


def design_problem(stage: Stage) -> str | None:
    """The stage's `density_sampling` (its YAML section, then its command line) against the design's for its arm."""
    if stage.arm is None:
        return None
    path = resolve_config(stage.config)
    config = load_config(path, stage.section)
    flags = [i for i, a in enumerate(stage.args) if a == "--density_sampling"]
    if flags:
        config["density_sampling"] = stage.args[flags[-1] + 1].lower() == "true"
    try:
        check_arm_config(stage.arm, stage.section, config, path)
    except ValueError as err:
        return f"{stage.name}: {err}"
    return None


def grpo_arm_configs(args: RunnerArguments) -> dict[str, str]:
    """Each GRPO arm (the oracle first when it runs, then the hypotheses) and the YAML it trains from."""
    arms = ([ORACLE] if args.oracle else []) + list(args.hypotheses)
    return {h: args.oracle_config if h == ORACLE else args.hypothesis_config.format(h=h.lower()) for h in arms}


def generation_length(args: RunnerArguments) -> int | None:
    """The GRPO arms' `max_completion_length` (an override wins), so evaluation samples every policy at the length it
    was trained at; `None` when no config sets it."""
    override = args.stage_overrides.get("grpo", {}).get("max_completion_length")
    if override is not None:
        return int(override)
    configs = grpo_arm_configs(args).values()
    lengths = {load_config(resolve_config(c), "grpo").get("max_completion_length") for c in configs} - {None}
    if len(lengths) > 1:
        raise ValueError(
            f"the GRPO arms generate at different max_completion_length {sorted(lengths)}; evaluation samples every "
            "policy at one length: set it once in the configs' shared defaults."
        )
    return lengths.pop() if lengths else None


def build_stages(args: RunnerArguments) -> list[Stage]:
    """The stage graph of the experiment, in an order that respects every dependency."""
    check_shared_reward_models(args)
    root = Path(args.output_dir).resolve()
    stages: list[Stage] = []
    common = ["--report_to", args.report_to]
    extra = {name: _flags(args.stage_overrides.get(name, {})) for name in OVERRIDE_SECTIONS}
    tiny = _uses_tiny_models(args)
    max_new_tokens = generation_length(args)
    worlds: dict[int, tuple[Stage, Stage]] = {}
    for seed in args.seeds:
        world = seed if args.world_seed is None else args.world_seed
        if world not in worlds:
            base = root / f"world{world}"
            prep_args = ["--output_dir", str(base / "data"), "--seed", str(world)]
            if args.n_train_pairs is not None:
                prep_args += ["--n_train_pairs", str(args.n_train_pairs)]
            prep_args += extra["prepare_data"]
            prep = Stage(
                f"prepare_data[world={world}]", "prepare_data.py", args.prepare_config, None, prep_args, base / "data"
            )
            indexes = {}
            for kind in index_kinds(args):
                indexes[kind] = Stage(
                    f"build_density{'' if kind == 'knn' else '_' + kind}[world={world}]",
                    "build_density.py",
                    args.density_config,
                    None,
                    [
                        "--data_dir",
                        str(base / "data"),
                        "--density_dir",
                        str(base / index_dir(kind)),
                        *INDEXES[kind],
                        *extra["build_density"],
                    ],
                    base / index_dir(kind),
                    [prep],
                )
            worlds[world] = (prep, indexes)
            stages += [prep, *indexes.values()]
        prep, indexes = worlds[world]
        dens = indexes["knn"]
        data, density = prep.output, dens.output

        def index_of(arm: str, section: str, indexes=indexes) -> Stage:
            """The index a stage samples from (the kNN one, for per-bucket metrics, when it samples uniformly)."""
            return indexes[SAMPLERS[arm][section] or "knn"]

        run = root / f"seed{seed}"
        seeded = [*common, "--seed", str(seed), "--data_dir", str(data)]
        sft_args = [*seeded, "--output_dir", str(run / "sft")]
        if tiny:  # otherwise the SFT config's model (a Hub id at scale)
            sft_args += ["--model_name_or_path", str(data / "tiny" / "policy")]
        if args.sft_max_steps:
            sft_args += ["--max_steps", str(args.sft_max_steps)]
        sft_args += extra["sft"]
        sft = Stage(f"sft[seed={seed}]", "train_sft.py", args.sft_config, None, sft_args, run / "sft", [prep], True)
        stages.append(sft)

        def rm_args(output: Path, index: Stage = dens, seeded=seeded, data=data) -> list[str]:
            out = [*seeded, "--output_dir", str(output), "--density_index_path", str(index.output)]
            if tiny:
                out += ["--model_name_or_path", str(data / "tiny" / "reward")]
            if args.rm_max_steps:
                out += [
                    "--max_steps",
                    str(args.rm_max_steps),
                    "--eval_steps",
                    str(args.rm_max_steps),
                    "--save_steps",
                    str(args.rm_max_steps),
                ]
            return out + extra["reward"]

        rms = {}
        for h in reward_model_arms(args):
            rms[h] = Stage(
                f"rm_{h}[seed={seed}]",
                "train_rm.py",
                args.hypothesis_config.format(h=h.lower()),
                "reward",
                rm_args(run / f"rm_{h.lower()}", index_of(h, "reward")),
                run / f"rm_{h.lower()}",
                [prep, index_of(h, "reward")],
                True,
                h,
            )
            stages.append(rms[h])
        rm_named = {RM_NAMES[h]: s for h, s in rms.items()}
        for name in (n for n in args.reward_baselines if n in REWARD_BASELINES):
            rm_named[name] = Stage(
                f"rm_{name}[seed={seed}]",
                "train_rm.py",
                args.baseline_rm_config.format(name=name),
                "reward",
                rm_args(run / f"rm_{name}", index_of(name, "reward")),
                run / f"rm_{name}",
                [prep, index_of(name, "reward")],
                True,
                name,
            )
            stages.append(rm_named[name])
        grpos = {}
        for h, config in grpo_arm_configs(args).items():
            grpo_args = [
                *seeded,
                "--output_dir",
                str(run / f"grpo_{h.lower()}"),
                "--density_index_path",
                str(index_of(h, "grpo").output),
                "--model_name_or_path",
                str(run / "sft"),
            ]
            deps = [index_of(h, "grpo"), sft]
            if h != ORACLE:
                grpo_args += ["--reward_model_path", str(rms[RM_OF[h]].output)]
                deps.append(rms[RM_OF[h]])
            if args.grpo_max_steps:
                grpo_args += ["--max_steps", str(args.grpo_max_steps), "--save_steps", str(args.grpo_max_steps)]
            grpo_args += extra["grpo"]
            grpos[h] = Stage(
                f"grpo_{h}[seed={seed}]",
                "train_grpo.py",
                config,
                "grpo",
                grpo_args,
                run / f"grpo_{h.lower()}",
                deps,
                True,
                h,
            )
            stages.append(grpos[h])
        for alpha in args.alphas or []:  # the dose-response arms: B's RM recipe and D's GRPO recipe at this alpha
            tag = dose_tag(alpha)
            dose_rm = Stage(
                f"rm_{tag}[seed={seed}]",
                "train_rm.py",
                args.hypothesis_config.format(h="b"),
                "reward",
                [*rm_args(run / f"rm_{tag}"), "--density_alpha", str(alpha)],
                run / f"rm_{tag}",
                [prep, dens],
                True,
                "B",
            )
            grpo_args = [
                *seeded,
                "--output_dir",
                str(run / f"grpo_{tag}"),
                "--density_index_path",
                str(density),
                "--model_name_or_path",
                str(run / "sft"),
                "--reward_model_path",
                str(dose_rm.output),
                "--density_alpha",
                str(alpha),
            ]
            if args.grpo_max_steps:
                grpo_args += ["--max_steps", str(args.grpo_max_steps), "--save_steps", str(args.grpo_max_steps)]
            grpo_args += extra["grpo"]
            stages += [
                dose_rm,
                Stage(
                    f"grpo_{tag}[seed={seed}]",
                    "train_grpo.py",
                    args.hypothesis_config.format(h="d"),
                    "grpo",
                    grpo_args,
                    run / f"grpo_{tag}",
                    [dens, sft, dose_rm],
                    True,
                    "D",
                ),
            ]
            rm_named[f"density@{alpha:g}"] = dose_rm
            grpos[f"D@{alpha:g}"] = stages[-1]
        eval_args = [
            "--data_dir",
            str(data),
            "--density_index_path",
            str(density),
            "--seed",
            str(seed),
            "--num_samples",
            str(args.eval_num_samples),
            "--output_file",
            str(run / "eval" / "results.json"),
            "--policies",
            f"SFT={run / 'sft'}",
            *[f"{h}={s.output}" for h, s in grpos.items()],
            "--reward_models",
            *[f"{name}={s.output}" for name, s in rm_named.items()],
        ]
        if args.eval_prompts_per_topic:
            eval_args += ["--prompts_per_topic", str(args.eval_prompts_per_topic)]
        if max_new_tokens is not None:
            eval_args += ["--max_new_tokens", str(max_new_tokens)]
        eval_args += extra["evaluate"]
        stages.append(
            Stage(
                f"evaluate[seed={seed}]",
                "evaluate.py",
                None,
                None,
                eval_args,
                run / "eval",
                [sft, *rm_named.values(), *grpos.values()],
            )
        )
    return stages


def reward_model_arms(args: RunnerArguments) -> list[str]:
    """The arms whose reward models the run trains: those its GRPO arms are scored by, and `uniform` / `density`
    when asked for as `reward_baselines`."""
    asked = {h for h, name in RM_NAMES.items() if name in args.reward_baselines}
    return sorted({RM_OF[h] for h in args.hypotheses} | asked)


def index_kinds(args: RunnerArguments) -> list[str]:
    """The density indexes the run's stages sample from, the kNN one first (evaluation buckets by it)."""
    rms = [h for h in args.reward_baselines if h in REWARD_BASELINES]
    arms = [*args.hypotheses, *reward_model_arms(args), *rms, *([ORACLE] if args.oracle else [])]
    used = {kind for arm in arms for kind in SAMPLERS[arm].values() if kind}
    return ["knn", *sorted(used - {"knn"})]


def dose_tag(alpha: float) -> str:
    """Directory-safe name of a dose-response arm: `alpha0.5`."""
    return f"alpha{alpha:g}"


def check_stage_configs(stages: list[Stage]) -> None:
    """Fail before anything runs: every config exists, has the script's section, fits this machine, and samples by
    density where the design says."""
    for stage in stages:
        if stage.config is None:
            continue
        path = resolve_config(stage.config)
        check_hardware(path, load_config(path, stage.section), stage.args)
        problem = design_problem(stage)
        if problem:
            raise ValueError(problem)
