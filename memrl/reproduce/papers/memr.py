"""MEMR (paper 000, Zhang et al.): Fig. 2 and the App. C ablations of Fig. 3.

Fig. 2 (Sec. 4): MEMR, MBPO and SAC on HalfCheetah, Walker2d, Ant and Hopper,
"mean of five trials", return against environment steps, against policy
updates and against model rollouts; run lengths from Table 1 (400k, 300k,
300k, 125k steps; ``memr.Config.run_length``). Fig. 3 (App. C): the size of
D_model, the policy updates per step G and the prioritization exponent alpha
("alpha = 0.6 works best for all benchmarks"). The values swept in Fig. 3 are
not in the text (the figure is an image): we sweep the D_model sizes Table 1
uses (1e6, 3e6, 6e6), G in {5, 10, 20} (MBPO's 20) and alpha in {0, 0.3, 0.6,
1}. The paper states no returns in its text or tables, so the table has no
paper column; its claims are relative (fewer policy updates and model
rollouts for the same return).

CPU scale: pendulum, 2 seeds. MEMR and MBPO learn pendulum in about 3k steps
(-187 and -190 at 3k in single-seed runs), so they run 3k; SAC runs 10k. MEMR's
beta annealing is stretched over the shorter run (``anneal_steps``); MBPO gets
the paper's M = 400 model rollouts per environment step (100000 per 250-step
round) so that the model-rollout axis compares like with like.
"""

from memrl.reproduce.grid import Figure, Paper, Row, Run

ENVS = {"halfcheetah": 400_000, "walker2d": 300_000, "ant": 300_000, "hopper": 125_000}
# Table 1's D_model per env; the Fig. 3 sweep is the other two sizes.
DATASET = {"halfcheetah": 3_000_000, "walker2d": 3_000_000, "ant": 6_000_000, "hopper": 1_000_000}
SIZES = {"memr_d1e6": 1_000_000, "memr_d3e6": 3_000_000, "memr_d6e6": 6_000_000}
ABLATIONS = {
    "memr_g10": {"config.updates_per_step": "10"},
    "memr_g20": {"config.updates_per_step": "20"},
    "memr_alpha0": {"config.priority_alpha": "0.0"},
    "memr_alpha03": {"config.priority_alpha": "0.3"},
    "memr_alpha1": {"config.priority_alpha": "1.0"},
}


def runs(scale: str) -> list[Run]:
    if scale == "cpu":
        short = (("config.anneal_steps", "3000"),)

        def memr(label, *flags, minutes=6):
            return Run(label, "memr", "pendulum", 3000, 500, 2, short + flags, minutes)

        return [
            memr("memr"),
            Run(
                "mbpo",
                "mbpo",
                "pendulum",
                3000,
                500,
                2,
                (("config.rollout_batch_size", "100000"),),
                14,
            ),
            Run("sac", "sac", "pendulum", 10_000, 500, 2, (), 4),
            memr("memr_d2e4", ("config.model_dataset_size", "20000")),
            memr("memr_g10", ("config.updates_per_step", "10"), minutes=8),
            memr("memr_alpha0", ("config.priority_alpha", "0.0")),
        ]
    out = []
    for env, steps in ENVS.items():
        out += [Run(algo, algo, env, steps, 5000, 5) for algo in ("memr", "mbpo", "sac")]
    for env, steps in ENVS.items():
        for label, size in SIZES.items():
            if size != DATASET[env]:
                out.append(
                    Run(
                        label,
                        "memr",
                        env,
                        steps,
                        5000,
                        5,
                        (("config.model_dataset_size", str(size)),),
                    )
                )
        for label, flags in ABLATIONS.items():
            out.append(Run(label, "memr", env, steps, 5000, 5, tuple(flags.items())))
    return out


MAIN = (("MEMR", "memr"), ("MBPO", "mbpo"), ("SAC", "sac"))
PAPER = Paper(
    key="memr",
    title="MEMR (Zhang et al.)",
    runs=runs,
    figures=(
        Figure(
            "fig2",
            "MEMR Fig. 2: return against environment steps, policy updates and model rollouts",
            (
                Row(MAIN),
                Row(MAIN, x="policy_updates"),
                Row(MAIN[:2], x="model_rollouts"),
            ),
        ),
        Figure(
            "fig3",
            "MEMR Fig. 3 (App. C): size of D_model, policy updates per step G, alpha",
            (
                Row(
                    (
                        ("Table 1 size (pendulum: 1e5)", "memr"),
                        ("2e4", "memr_d2e4"),
                        ("1e6", "memr_d1e6"),
                        ("3e6", "memr_d3e6"),
                        ("6e6", "memr_d6e6"),
                    ),
                    title="D_model",
                ),
                Row((("G 5", "memr"), ("G 10", "memr_g10"), ("G 20", "memr_g20")), title="G"),
                Row(
                    (
                        ("alpha 0 (uniform)", "memr_alpha0"),
                        ("alpha 0.3", "memr_alpha03"),
                        ("alpha 0.6", "memr"),
                        ("alpha 1", "memr_alpha1"),
                    ),
                    title="alpha",
                ),
            ),
        ),
    ),
    notes=(
        "The paper reports curves only (no returns in its text or tables). Its claims: MEMR "
        "matches MBPO's return with 1/4 of the policy updates (G = 5 against MBPO's 20; "
        "halfcheetah: 40) and a fraction of the model rollouts (one-step rollouts)."
    ),
)
