"""What the contextual benchmark trains: its models (a)-(h) as named experiments
(``ctxconv/configs/experiment/``), the ablation grid over them, the candidates and finals.

Every run is ``ctxconv-train experiment=<name>`` with only its own overrides (the ablation's
settings, a seed); a candidate is a named experiment and nothing else.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.runner import Run, summary

SEEDS = (0, 1, 2)
ABLATION_EPOCHS = 2
TEST_IMAGES = 10_000
LONG_EPOCHS = 20  # (g) and (h): their experiments' trainer.epochs
GROUPS = "abcdefgh"

DEFAULT = "fashion_mnist"  # (a)
BACKPROP = "fashion_mnist_backprop"  # (d)
CONTRAST = "contextual/contrast"  # (b), (e): where the context enters is chosen per run
OFFICIAL = "contextual/official"  # (c)
OFFICIAL_CLASSIFIER = "contextual/official_classifier"  # (f)
PLACEMENTS = {"first": "[true,false,false]", "last": "[false,false,true]",
              "all": "[true,true,true]"}
#: the default with augmentation or wider blocks (int8 weights still under 1 MB),
#: validation only, at its full 6 epochs per block (2 epochs cannot show what augmentation
#: buys); seed 0 of (a) is the reference
DEFAULT_VARIANTS = {"shift2_flip": ["trainer.augment=2", "trainer.flip=true"],
                    "flip": ["trainer.flip=true"],
                    "wide": ["model.blocks=[[1,96,3],[2,192,3],[2,256,3]]"]}
F_CHOSEN = "abl_c_classifier_grid7_batchnorm"  # (f)'s best at 2 epochs per block: f_bce
#: beyond the 2-epoch ablation, at the full epochs: each candidate (the named experiment
#: ``contextual/<name>``) is trained at every seed on validation only; the best mean
#: validation accuracy makes the group's finals, and only those runs read the test split
CANDIDATES: dict[str, list[str]] = {
    "f": ["f_bce", "f_softmax", "f_softmax_e10"],
    "g": ["g_e20", "g_e20_flip", "g_e20_wide_flip"],
    "h": ["h_e20", "h_e20_flip"],
}
LABELS = {
    "a": "(a) default: context-free convs, local linear head (goodness linear in the context)",
    "b": "(b) best contextual: context in the conv (chosen on validation), generate_data pairs",
    "c": "(c) official placement: context into block 0's conv, energy goodness, BCE, L2 norm",
    "d": "(d) backprop, end to end, architecture of (a)",
    "e": "(e) best contextual within 2x multipass MACs: context in the last block's conv "
         "(chosen on validation), generate_data pairs",
    "f": "(f) the official code's whole structure: the context into block 0's conv, "
         "energy-goodness blocks, then its cross-entropy classifier (block 2's linear head, "
         "scored under every candidate context); objective and settings chosen on validation",
    "g": f"(g) (a) trained longer: {LONG_EPOCHS} epochs per block, augmentation and widths "
         "chosen on validation",
    "h": f"(h) backprop at (g)'s budget: {LONG_EPOCHS} epochs, augmentation chosen on "
         "validation",
}


def exclusive_runs() -> list[Run]:
    """Timed alone: the host-training benchmark on the accelerator (and seed 0 of a, d)."""
    return [
        Run("a_seed0", "a", [], threads=None),
        Run("a_seed0_nocache", "exclusive", ["trainer.cache_prefix=off"], test=False,
            threads=None),
        Run("a_seed0_bf16", "exclusive", ["trainer.precision=bf16"], test=False, threads=None),
        Run("d_seed0", "d", [], threads=None, experiment=BACKPROP),
    ]


def ablation_runs() -> list[Run]:
    """Chosen on validation at 2 epochs per block: where and how the context enters (b), and
    the official form's free settings (c), (f)."""
    short = [f"trainer.epochs={ABLATION_EPOCHS}"]
    runs = [Run("abl_default", "ablation_ref", short, test=False)]
    for name, variant in DEFAULT_VARIANTS.items():  # (a)'s stretch: at the full epochs
        runs.append(Run(f"abl_a_{name}", "ablation_a", variant, test=False))
    for place, flags in PLACEMENTS.items():
        for inj in ("bias", "film"):
            runs.append(Run(f"abl_b_{place}_{inj}_n9", "ablation_b",
                            [*short, f"model.contextual={flags}", f"model.injection={inj}"],
                            test=False, experiment=CONTRAST))
    for obj, n in (("contrast", 1), ("bce", 1)):
        runs.append(Run(f"abl_b_all_bias_{obj}_n{n}", "ablation_b",
                        [*short, f"model.contextual={PLACEMENTS['all']}", "model.injection=bias",
                         f"trainer.objective={obj}", f"data.negatives={n}"], test=False,
                        experiment=CONTRAST))
    for inj in ("bias", "bias+film"):
        for lr in ("2e-3", "5e-3", "1e-2"):
            runs.append(Run(f"abl_c_{inj.replace('+', '')}_lr{lr}", "ablation_c",
                            [*short, f"model.injection={inj}", f"trainer.lr={lr}"],
                            test=False, experiment=OFFICIAL))
        runs.append(Run(f"abl_c_{inj.replace('+', '')}_lr5e-3_allscores", "ablation_c",
                        [*short, f"model.injection={inj}", "trainer.lr=5e-3",
                         "model.score_blocks=null"], test=False, experiment=OFFICIAL))
    for name, grid in (("gap", 1), ("grid7", 7)):  # its pooling, and (a)'s
        runs.append(Run(f"abl_c_classifier_{name}", "ablation_f",
                        [*short, "model.injection=bias", f"model.max_grid={grid}"], test=False,
                        experiment=OFFICIAL_CLASSIFIER))
    free = {"batchnorm": ["model.injection=bias", "model.norm=batch"],  # what L2 costs
            "biasfilm_lr5e-3": ["model.injection=bias+film", "trainer.lr=5e-3"]}  # (c)'s
    for name, settings in free.items():
        runs.append(Run(f"abl_c_classifier_grid7_{name}", "ablation_f",
                        [*short, *settings, "model.max_grid=7"], test=False,
                        experiment=OFFICIAL_CLASSIFIER))
    return runs


def candidate_groups(which: str) -> str:
    """The groups ``which`` names ("fgh"), or "" when it names candidates instead."""
    return which if set(which) <= set(CANDIDATES) else ""


def best_candidate(vals: dict[str, list[float]]) -> str:
    """The candidate with the best mean validation accuracy over the seeds."""
    return max(vals, key=lambda n: sum(vals[n]) / len(vals[n]))


def candidate_runs(which: str) -> list[Run]:
    """Every candidate of the groups in ``which`` ("fgh"), or the named candidates
    ("f_softmax,g_e20"), at every seed, validation only."""
    groups = candidate_groups(which)
    names = [] if groups else which.split(",")
    wanted = [(g, n) for g, cands in CANDIDATES.items() for n in cands
              if g in groups or n in names]
    return [Run(f"cand_{name}_seed{s}", f"candidates_{g}", [], seed=s, test=False,
                experiment=f"contextual/{name}") for g, name in wanted for s in SEEDS]


def candidate_val_accuracies(out: Path, group: str) -> dict[str, list[float]]:
    """Each fully trained candidate of ``group``: its multipass validation accuracy per seed."""
    means = {}
    for name in CANDIDATES.get(group, []):
        vals = [s["val_accuracy"]["multipass"] for seed in SEEDS
                if (s := summary(out, f"cand_{name}_seed{seed}"))]
        if len(vals) == len(SEEDS):
            means[name] = vals
    return means


def seed_runs() -> list[Run]:
    return [Run(f"{g}_seed{s}", g, [], seed=s, experiment=e) for s in SEEDS[1:]
            for g, e in (("a", DEFAULT), ("d", BACKPROP))]


def finals(group: str, chosen: Run) -> list[Run]:
    """Three seeds of the chosen ablation at the full epochs (its short-epoch override out)."""
    overrides = [o for o in chosen.overrides if not o.startswith("trainer.epochs=")]
    return [Run(f"{group}_seed{s}", group, overrides, seed=s, experiment=chosen.experiment)
            for s in SEEDS]


def within_budget(runs: list[Run]) -> list[Run]:
    """The (b) ablations whose multipass MACs stay within 2x the context-free model: the
    context in the last block's conv only. A contextual earlier block makes every later
    block run once per candidate (about 10x here); the last block's conv of its input is
    shared, only its injection, ReLU and goodness run per candidate."""
    last = PLACEMENTS["last"]
    return [r for r in runs if r.group == "ablation_b"
            and f"model.contextual={last}" in r.overrides]


def choose(out: Path, runs: list[Run]) -> Run | None:
    """The finished run with the best multipass validation accuracy."""
    done = [(s["val_accuracy"]["multipass"], r) for r in runs if (s := summary(out, r))]
    return max(done, key=lambda t: t[0])[1] if done else None
