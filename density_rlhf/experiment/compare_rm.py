"""`density-rlhf compare-rm`: does density weighting make a reward model generalize better on your preference data?

Every pair is held out once: the prompts are split into `folds` by a hash of their id (prompt-disjoint), and each fold
is scored by reward models trained on the others (minus a prompt-disjoint validation part, for early stopping). Each
weighting trains one reward model per (fold, seed) with `DensityRewardTrainer`, on a density index built over that
fold's training prompts; the held-out pairs are bucketed by that index (rare / mid / common) and scored per pair. The
summary compares each weighting with uniform per bucket: run-level intervals and minimum detectable effects, McNemar
on the pooled pairs, Holm over the exploratory family. Each (weighting, fold, seed) is saved as it finishes, so a run
resumes where it stopped.
"""

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.pairs import PairStats, build_rows, rows_to_dataset
from ..data.sources import CONVERTERS, HUB_NAMES, hh_turns, load_pairs
from ..prompts import prompt_id, prompt_text
from .stats import holm, mcnemar_p, mean_ci, minimum_detectable_effect, p_value


logger = logging.getLogger(__name__)

BUCKET_NAMES = ("all", "rare", "mid", "common")
# The weightings compared, as the `DensityRewardConfig` fields each sets; `density@<alpha>` and `mix@<eps>` are
# built from `alphas` and `uniform_mixes`.
WEIGHTINGS: dict[str, dict[str, Any]] = {
    "uniform": {"density_sampling": False},
    "density": {"density_sampling": True},
    "density_loss": {"density_sampling": True, "density_weighting": "loss"},
    "cluster": {"density_sampling": True, "density_estimator": "cluster"},
    "schedule": {"density_sampling": True, "density_alpha_schedule": "linear"},
}
BUDGETS = ("fixed", "convergence")
FORMATS = ("auto", *CONVERTERS)


@dataclass
class CompareRMArguments:
    r"""
    Arguments of `density-rlhf compare-rm` (`recipes/compare_rm.py`); the training settings are the
    [`DensityRewardConfig`] fields (learning rate, batch size, `max_length`, `max_steps`, ...), shared by every run,
    and its `output_dir` receives the runs, `summary.json`, `report.md` and the plot.

    Parameters:
        dataset_name (`list[str]`):
            Preference pairs: one or more local `.jsonl`, `.jsonl.gz`, `.json` or `.parquet` files or Hub dataset
            ids, concatenated (a pair repeated across them is kept once).
        dataset_format (`str`, *optional*, defaults to `"auto"`):
            Schema of the data: `hh` (HH-RLHF transcripts), `uf` (UltraFeedback), `se` (Stack Exchange), `local`
            (`prompt`/`chosen`/`rejected`, strings or messages), or `auto` (a local file by its first record; a Hub
            id by its name).
        dataset_split (`str`, *optional*, defaults to `"train"`):
            Split of a Hub dataset.
        max_pairs (`int` or `None`, *optional*):
            Use only the first this many pairs.
        prompt_turns (`str`, *optional*, defaults to `"last_user"`):
            What of a multi-turn prompt the reward model reads and the index embeds: `last_user` or `dialogue`.
        weightings (`list[str]`, *optional*, defaults to `["uniform", "density", "density_loss", "cluster"]`):
            Weightings to compare, among `uniform`, `density`, `density_loss` (rows drawn uniformly, each loss
            weighted), `cluster` (k-means clusters balanced) and `schedule` (alpha from 0 to the index's over the
            run's epochs). `uniform` is always run: the others are compared with it.
        alphas (`list[float]`, *optional*, defaults to `[]`):
            Also compare density sampling at these alphas (`density@<alpha>`).
        uniform_mixes (`list[float]`, *optional*, defaults to `[]`):
            Also compare density sampling mixed with uniform by these fractions (`mix@<eps>`).
        folds (`int`, *optional*, defaults to `4`):
            Prompt-disjoint folds; each pair is held out once.
        seeds (`list[int]`, *optional*, defaults to `[0, 1]`):
            Training seeds per fold.
        budget (`str`, *optional*, defaults to `"fixed"`):
            `fixed`: `max_steps` steps; `convergence`: up to `num_train_epochs` epochs, stopped early on the
            validation loss (`early_stopping_patience` evaluations without improvement, every `eval_steps`).
        validation_fraction (`float`, *optional*, defaults to `0.1`):
            Share of each fold's training prompts held out for validation (prompt-disjoint).
        early_stopping_patience (`int`, *optional*, defaults to `3`):
            Evaluations without a lower validation loss before a `convergence` run stops.
        report_only (`bool`, *optional*, defaults to `False`):
            Train nothing: write the report from the runs already saved (a partial comparison says how many runs
            each weighting has).
        model_name_or_path (`str` or `None`, *optional*):
            Reward-model backbone (a sequence classifier with one label is put on it); default the offline
            all-MiniLM-L6-v2. Real runs name a Hub model.
        embedder (`str` or `None`, *optional*):
            sentence-transformers model of the density index; default the offline all-MiniLM-L6-v2.
    """

    dataset_name: list[str] = field(metadata={"help": "Local preference files or Hub dataset ids (concatenated)."})
    dataset_format: str = field(default="auto", metadata={"help": f"One of {FORMATS}."})
    dataset_split: str = field(default="train", metadata={"help": "Split of a Hub dataset."})
    max_pairs: int | None = field(default=None, metadata={"help": "Use only the first this many pairs."})
    prompt_turns: str = field(default="last_user", metadata={"help": "last_user or dialogue."})
    weightings: list[str] = field(
        default_factory=lambda: ["uniform", "density", "density_loss", "cluster"],
        metadata={"help": f"Weightings to compare, among {list(WEIGHTINGS)}."},
    )
    alphas: list[float] = field(default_factory=list, metadata={"help": "Also compare density at these alphas."})
    uniform_mixes: list[float] = field(
        default_factory=list, metadata={"help": "Also compare density mixed with uniform by these fractions."}
    )
    folds: int = field(default=4, metadata={"help": "Prompt-disjoint folds (each pair is held out once)."})
    seeds: list[int] = field(default_factory=lambda: [0, 1], metadata={"help": "Training seeds per fold."})
    budget: str = field(default="fixed", metadata={"help": f"One of {BUDGETS}."})
    validation_fraction: float = field(default=0.1, metadata={"help": "Validation share of each fold's prompts."})
    early_stopping_patience: int = field(default=3, metadata={"help": "Evaluations without improvement to stop."})
    report_only: bool = field(default=False, metadata={"help": "Write the report from the saved runs; train nothing."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Reward-model backbone."})
    embedder: str | None = field(default=None, metadata={"help": "Embedder of the density index."})

    def __post_init__(self):
        if isinstance(self.dataset_name, str):
            self.dataset_name = [self.dataset_name]
        if not self.dataset_name:
            raise ValueError("dataset_name needs at least one file or Hub id.")
        if self.dataset_format not in FORMATS:
            raise ValueError(f"dataset_format must be one of {FORMATS}, got {self.dataset_format!r}.")
        unknown = sorted(set(self.weightings) - set(WEIGHTINGS))
        if unknown:
            raise ValueError(
                f"unknown weightings {unknown}; choose from {list(WEIGHTINGS)} (and alphas, uniform_mixes)."
            )
        if "uniform" not in self.weightings:
            self.weightings.insert(0, "uniform")  # the comparison every other weighting is made against
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2 (each pair is held out once), got {self.folds}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and not empty, got {self.seeds}.")
        if self.budget not in BUDGETS:
            raise ValueError(f"budget must be one of {BUDGETS}, got {self.budget!r}.")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}.")
        if any(not a >= 0 for a in self.alphas) or any(not 0 <= e <= 1 for e in self.uniform_mixes):
            raise ValueError("alphas must be >= 0 and uniform_mixes in [0, 1].")

    def weighting_fields(self) -> dict[str, dict[str, Any]]:
        """Every weighting this run compares, by name, with the config fields it sets."""
        chosen = {name: WEIGHTINGS[name] for name in self.weightings}
        chosen.update({f"density@{a:g}": {"density_sampling": True, "density_alpha": a} for a in self.alphas})
        chosen.update({f"mix@{e:g}": {"density_sampling": True, "density_uniform_mix": e} for e in self.uniform_mixes})
        return chosen


# --- data -----------------------------------------------------------------------------------------------------------
def _hash_unit(text: str, salt: str) -> float:
    """A number in [0, 1) fixed by `text` and `salt` (sha256), for splits that do not depend on row order."""
    return int(hashlib.sha256(f"{salt}:{text}".encode()).hexdigest()[:15], 16) / 16**15


def assign_folds(prompt_ids: list[str], folds: int) -> np.ndarray:
    """The fold of each row, by a hash of its prompt id: every row of a prompt lands in the same fold."""
    return np.array([int(_hash_unit(pid, "fold") * folds) for pid in prompt_ids], dtype=np.int64)


def validation_rows(prompt_ids: list[str], fraction: float) -> np.ndarray:
    """Rows whose prompt falls in the validation share (a second hash, independent of the fold's)."""
    return np.array([_hash_unit(pid, "validation") < fraction for pid in prompt_ids], dtype=bool)


def fold_rows(folds: np.ndarray, validation: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row numbers of `fold`'s training part, its validation part (from the other folds) and its held-out part."""
    held = np.flatnonzero(folds == fold)
    return np.flatnonzero((folds != fold) & ~validation), np.flatnonzero((folds != fold) & validation), held


def _format_of(name: str, dataset_format: str) -> tuple[str, str | None]:
    """(source, local path or `None` for the Hub) of one `dataset_name` entry."""
    path = Path(name)
    if not path.exists():
        if dataset_format != "auto":
            return dataset_format, None
        known = {hub: source for source, hub in HUB_NAMES.items()}
        if name not in known:
            raise ValueError(
                f"{name!r} is not a local file and not a Hub dataset whose schema is known "
                f"({sorted(known)}): set dataset_format to one of {list(CONVERTERS)}."
            )
        return known[name], None
    if dataset_format != "auto":
        return dataset_format, str(path)
    from ..data.pairs import read_records

    first = next(iter(read_records(path)), None)
    if first is None:
        raise ValueError(f"{path} holds no records.")
    if "prompt" in first:
        return "local", str(path)
    if isinstance(first.get("chosen"), str) and "Human:" in first["chosen"]:
        return "hh", str(path)
    raise ValueError(f"{path}: cannot tell its schema from keys {sorted(first)}; set dataset_format.")


def load_comparison_pairs(args: CompareRMArguments):
    """The pairs as text: `prompt` (the turns the RM reads), `chosen`, `rejected`, `id` and `prompt_id` (of that
    prompt text, so that two pairs the RM sees with the same prompt share a fold)."""
    from datasets import concatenate_datasets, load_dataset

    stats, seen, parts = PairStats(), set(), []
    for name in args.dataset_name:
        source, path = _format_of(name, args.dataset_format)
        if path is None and source == "local":  # a Hub dataset already in the prompt/chosen/rejected schema
            records = load_dataset(name, split=args.dataset_split)
            rows = build_rows(records, CONVERTERS["local"], "local", stats, conversational=True,
                              max_pairs=args.max_pairs, seen=seen)  # fmt: skip
            pairs = rows_to_dataset(rows)
        else:
            pairs = load_pairs(source, path, split=args.dataset_split, max_pairs_per_source=args.max_pairs,
                               conversational=True, hub_name=None if path else name, stats=stats, seen=seen)  # fmt: skip

        def as_text(row, source=source):
            messages = row["prompt"]
            if source == "hh" and len(messages) == 1:  # a transcript kept whole: split it into its turns
                messages = hh_turns(row["prompt_text"]) or messages
            text = prompt_text(messages, args.prompt_turns)
            reply = {side: row[side][-1]["content"] for side in ("chosen", "rejected")}
            return {"prompt": text, **reply, "prompt_id": prompt_id(text)}

        keep = ["id", "prompt", "chosen", "rejected", "prompt_id"]
        parts.append(pairs.map(as_text, remove_columns=[c for c in pairs.column_names if c not in keep]))
    pairs = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if args.max_pairs is not None:
        pairs = pairs.select(range(min(args.max_pairs, len(pairs))))
    logger.info("%d pairs, %d distinct prompts", len(pairs), len(set(pairs["prompt_id"])))
    return pairs


# --- one run --------------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_checked(path: Path, payload: dict[str, Any]) -> None:
    """`payload` as JSON with a `.sha256` beside it (read back by `read_checked`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload) + "\n")
    path.with_suffix(".sha256").write_text(_sha256(path) + "\n")


def read_checked(path: Path) -> dict[str, Any] | None:
    """A file `write_checked` wrote, or `None` when it is missing or its checksum does not match (it is re-run)."""
    digest = path.with_suffix(".sha256")
    if not path.exists() or not digest.exists():
        return None
    if digest.read_text().strip() != _sha256(path):
        logger.warning("%s does not match its checksum: running it again", path)
        return None
    return json.loads(path.read_text())


def fold_index(args: CompareRMArguments, train, fold: int, root: Path):
    """The density index over a fold's training prompts (built once, saved under `root`)."""
    from ..index import DensityIndex

    directory = root / "indexes" / f"fold{fold}"
    if directory.exists():
        try:
            return DensityIndex.load(directory)
        except Exception as err:  # noqa: BLE001 - a broken or partial index is rebuilt
            logger.warning("rebuilding the index of fold %d (%s)", fold, err)
    index = DensityIndex.from_dataset(train, embedder=args.embedder, show_progress=False)
    index.save(directory)
    return index


def score_pairs(trainer, dataset_key: str) -> dict[str, tuple[int, float]]:
    """Per held-out pair the trainer kept (TRL drops pairs longer than `max_length`): whether the chosen reply
    scores higher, and the pair's share of TRL's loss; by pair id."""
    import torch
    from trl import RewardTrainer

    from ..eval_groups import pop_group_labels

    model = trainer.model
    model.eval()
    scores = {}
    for batch in trainer.get_eval_dataloader(dataset_key):
        ids = batch.pop("row_ids")
        pop_group_labels(batch)
        batch = trainer._prepare_inputs(batch)
        with torch.no_grad():
            _, outputs = RewardTrainer.compute_loss(trainer, model, batch, return_outputs=True)
        chosen, rejected = torch.chunk(outputs.logits.squeeze(-1).float(), chunks=2)
        losses = trainer._pair_losses(chosen, rejected, batch.get("margin"))
        for pid, c, r, loss in zip(ids, chosen.tolist(), rejected.tolist(), losses.tolist()):
            scores[pid] = (int(c > r), float(loss))
    return scores


def train_one(args, training_args, weighting: dict[str, Any], fold: int, seed: int, data, root: Path) -> dict:
    """Train one reward model (this weighting, fold and seed) and score the fold's held-out pairs."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, EarlyStoppingCallback

    from ..embedding import resolve_embedder
    from ..reward_trainer import DensityRewardTrainer

    pairs, folds, validation = data
    train, val_set, held_set = (pairs.select(rows) for rows in fold_rows(folds, validation, fold))
    index = fold_index(args, train, fold, root)
    run_dir = root / "checkpoints" / f"fold{fold}_seed{seed}"
    fields = dict(weighting)
    if fields.get("density_alpha_schedule") == "linear":  # alpha from 0 to the index's over the run's epochs
        draws = training_args.max_steps * training_args.per_device_train_batch_size if args.budget == "fixed" else 0
        epochs = math.ceil(draws / len(train)) if draws else math.ceil(training_args.num_train_epochs)
        fields["density_schedule_epochs"] = max(2, epochs)
    budget = {}
    if args.budget == "convergence":
        budget = dict(max_steps=-1, eval_strategy="steps", save_strategy="steps", load_best_model_at_end=True,
                      metric_for_best_model="eval_validation_loss", greater_is_better=False, save_total_limit=1)  # fmt: skip
        budget["save_steps"] = training_args.eval_steps
    config = dataclasses.replace(
        training_args, output_dir=str(run_dir), seed=seed, record_seen_ids=True, report_to=[],
        **({"save_strategy": "no", "eval_strategy": "no"} if args.budget == "fixed" else {}), **budget, **fields,
    )  # fmt: skip
    backbone = args.model_name_or_path or resolve_embedder(None)
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=1, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(backbone, trust_remote_code=False)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    callbacks = [EarlyStoppingCallback(args.early_stopping_patience)] if args.budget == "convergence" else []
    trainer = DensityRewardTrainer(
        model, config, train_dataset=train, eval_dataset={"validation": val_set, "heldout": held_set},
        processing_class=tokenizer, density_index=index, callbacks=callbacks,
    )  # fmt: skip
    start = time.time()
    heldout = trainer.eval_dataset.pop("heldout")  # scored once at the end, not at every validation evaluation
    trainer.train()
    trainer.eval_dataset["heldout"] = heldout
    scores = score_pairs(trainer, "heldout")
    buckets = dict(zip(held_set["id"], index.buckets_for(held_set["prompt_id"], held_set["prompt"])))
    shutil.rmtree(run_dir, ignore_errors=True)  # checkpoints are not kept: the scores are the result
    return {
        "pairs": {pid: [*score, buckets[pid]] for pid, score in scores.items()},
        "heldout_pairs": len(held_set),
        "train_pairs": len(train),
        "steps": trainer.state.global_step,
        "seconds": round(time.time() - start, 1),
        **({"best_step": trainer.state.best_global_step} if args.budget == "convergence" else {}),
    }


# --- summary --------------------------------------------------------------------------------------------------------
def _in_bucket(run: dict, bucket: str) -> dict[str, list]:
    """The run's scored pairs (`[correct, loss, bucket]` by pair id) in `bucket` (`all`: every one)."""
    return {pid: p for pid, p in run["pairs"].items() if bucket == "all" or p[2] == bucket}


def _mean_of(run: dict, bucket: str, field: int) -> float:
    values = [p[field] for p in _in_bucket(run, bucket).values()]
    return float(np.mean(values)) if values else float("nan")


def summarize(runs: dict[str, dict[tuple[int, int], dict]], primary: tuple[str, ...] = ("all", "rare")) -> dict:
    """Per weighting and bucket: accuracy and loss over runs, the paired difference from uniform per (fold, seed)
    with its interval, minimum detectable effect and p-value, and McNemar on the pooled pairs. `density` against
    uniform on the `primary` buckets are the primary endpoints; every other test is exploratory, Holm-corrected."""
    uniform = runs["uniform"]
    table: dict[str, dict[str, Any]] = {}
    family = []
    for name, by_run in runs.items():
        keys = sorted(set(by_run) & set(uniform))
        if not keys:
            continue
        table[name] = {}
        for bucket in BUCKET_NAMES:
            acc = [_mean_of(by_run[k], bucket, 0) for k in keys]
            entry: dict[str, Any] = {
                "accuracy": mean_ci(acc),
                "loss": mean_ci([_mean_of(by_run[k], bucket, 1) for k in keys]),
                "pairs_per_run": float(np.mean([len(_in_bucket(by_run[k], bucket)) for k in keys])),
            }
            if name != "uniform":
                diff = [a - _mean_of(uniform[k], bucket, 0) for a, k in zip(acc, keys)]
                only_uniform = only_this = 0
                for k in keys:
                    theirs = uniform[k]["pairs"]
                    for pid, (correct, _, _) in _in_bucket(by_run[k], bucket).items():
                        if pid in theirs:
                            only_uniform += int(theirs[pid][0] and not correct)
                            only_this += int(correct and not theirs[pid][0])
                entry["difference"] = {
                    **mean_ci(diff), "mde": minimum_detectable_effect(diff), "p_value": p_value(diff),
                    "mcnemar_p": mcnemar_p(only_uniform, only_this), "only_uniform": only_uniform,
                    "only_this": only_this,
                }  # fmt: skip
                entry["difference"]["primary"] = name == "density" and bucket in primary
                if not entry["difference"]["primary"]:
                    family.append(entry["difference"])
            table[name][bucket] = entry
    for diff, rejected in zip(family, holm([d["mcnemar_p"] for d in family])):
        diff["holm_rejected"] = rejected
    steps = {
        name: {key: float(np.mean([r[key] for r in by_run.values()])) for key in ("steps", "best_step")
               if by_run and all(key in r for r in by_run.values())}
        for name, by_run in runs.items()
    }  # fmt: skip
    return {"table": table, "runs": {name: len(by_run) for name, by_run in runs.items()}, "steps": steps}


def _fmt(stat: dict[str, Any], signed: bool = False) -> str:
    if stat["mean"] != stat["mean"]:
        return "n/a"
    sign = "+" if signed else ""
    text = f"{stat['mean']:{sign}.3f}"
    if stat.get("ci_low") is not None:
        text += f" [{stat['ci_low']:{sign}.3f}, {stat['ci_high']:{sign}.3f}]"
    return text


def _budget_text(summary: dict, args: CompareRMArguments, training_args) -> str:
    batch = training_args.per_device_train_batch_size
    if args.budget == "fixed":
        return f"fixed budget: {training_args.max_steps} steps of {batch} pairs"
    stopped = ", ".join(
        f"{name} {s['best_step']:.0f}/{s['steps']:.0f}" for name, s in summary["steps"].items() if "best_step" in s
    )
    return (
        f"convergence budget: batches of {batch} pairs for up to {training_args.num_train_epochs:g} epochs, the "
        f"validation loss every {training_args.eval_steps} steps, stopped after {args.early_stopping_patience} "
        f"evaluations without a lower one, the best checkpoint kept; mean best step / steps run: {stopped}"
    )


def write_report(summary: dict, args: CompareRMArguments, training_args, out: Path, plot: str | None) -> Path:
    table = summary["table"]
    lines = [
        "# Reward-model comparison by weighting", "",
        f"Data: {', '.join(f'`{n}`' for n in args.dataset_name)} ({summary['settings']['pairs']} pairs, "
        f"{args.prompt_turns}), {args.folds} prompt-disjoint folds × seeds {args.seeds} "
        f"({_budget_text(summary, args, training_args)}; lr {training_args.learning_rate:g}, max_length "
        f"{training_args.max_length}). Every pair is held out once; "
        "buckets are those of each fold's training index. Intervals are 95% t-intervals over runs (fold × seed).",
        "",
        "Runs per weighting: " + ", ".join(f"{name} {n}" for name, n in summary["runs"].items())
        + ("" if summary["settings"]["complete"] else " (**partial**: not every (fold, seed) has finished)"),
        "",
        "Primary endpoints (fixed before the runs): `density` − `uniform` held-out accuracy on all pairs and on the "
        "rare bucket. Every other difference is exploratory; its McNemar p-value is Holm-corrected over the family.",
        "", "| weighting | bucket | pairs/run | accuracy | loss | Δ accuracy vs uniform | MDE | McNemar p | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, buckets in table.items():
        for bucket, entry in buckets.items():
            diff = entry.get("difference")
            note = ""
            if diff:
                note = "primary" if diff["primary"] else ("Holm: rejected" if diff.get("holm_rejected") else "")
            cells = [
                name, bucket, f"{entry['pairs_per_run']:.0f}", _fmt(entry["accuracy"]), _fmt(entry["loss"]),
                _fmt(diff, signed=True) if diff else "", f"{diff['mde']:.3f}" if diff and diff["mde"] else "",
                f"{diff['mcnemar_p']:.3f}" if diff else "", note,
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    if plot:
        lines += ["", f"![accuracy difference from uniform by bucket]({plot})"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_differences(summary: dict, out: Path) -> str | None:
    """Held-out accuracy difference from uniform per bucket and weighting, with intervals, as `differences.png`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = [n for n in summary["table"] if n != "uniform"]
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        for j, bucket in enumerate(BUCKET_NAMES):
            diff = summary["table"][name][bucket]["difference"]
            low = diff["mean"] - diff["ci_low"] if diff.get("ci_low") is not None else 0
            ax.bar(j + i * width, diff["mean"], width, yerr=low, capsize=3, color=f"C{i}",
                   label=name if j == 0 else None)  # fmt: skip
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(BUCKET_NAMES))], BUCKET_NAMES)
    ax.set_ylabel("held-out accuracy − uniform")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "differences.png", dpi=120)
    plt.close(fig)
    return "differences.png"


def compare(args: CompareRMArguments, training_args) -> dict:
    """Run (or resume) every (weighting, fold, seed) and write `summary.json`, `report.md` and the plot."""
    from tqdm.auto import tqdm

    root = Path(training_args.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    pairs = load_comparison_pairs(args)
    if len(set(pairs["prompt_id"])) < 2 * args.folds:
        raise ValueError(f"{len(set(pairs['prompt_id']))} distinct prompts are too few for {args.folds} folds.")
    data = (
        pairs,
        assign_folds(pairs["prompt_id"], args.folds),
        validation_rows(pairs["prompt_id"], args.validation_fraction),
    )
    weightings = args.weighting_fields()
    if not args.report_only:  # every fold's index first (shared by its weightings and seeds)
        for fold in range(args.folds):
            fold_index(args, pairs.select(fold_rows(*data[1:], fold)[0]), fold, root)
    # seed by seed, fold by fold, every weighting: a partial comparison is still paired
    jobs = [(name, fold, seed) for seed in args.seeds for fold in range(args.folds) for name in weightings]
    runs: dict[str, dict[tuple[int, int], dict]] = {name: {} for name in weightings}
    for name, fold, seed in tqdm(jobs, desc="compare-rm runs", disable=args.report_only):
        path = root / "runs" / args.budget / name / f"fold{fold}_seed{seed}.json"
        result = read_checked(path)
        if result is None and not args.report_only:
            result = train_one(args, training_args, weightings[name], fold, seed, data, root)
            write_checked(path, result)
        if result is not None:
            runs[name][(fold, seed)] = result
    if not runs["uniform"]:
        raise ValueError(f"no finished uniform run under {root / 'runs' / args.budget} to compare with.")
    summary = summarize(runs)
    summary["settings"] = {"dataset": args.dataset_name, "pairs": len(pairs), "folds": args.folds,
                           "seeds": args.seeds, "budget": args.budget, "weightings": weightings,
                           "complete": all(len(r) == args.folds * len(args.seeds) for r in runs.values())}  # fmt: skip
    (root / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    plot = plot_differences(summary, root)
    report = write_report(summary, args, training_args, root, plot)
    logger.info("report: %s", report)
    return summary
