"""MEMB (paper 003, Tan et al.): Fig. 1 and the App. B ablations (Fig. 2-4, B.4).

- Fig. 1 (Sec. 5): MEMB against SAC, SVG and MBPO (DDPG, SLBO, POPLIN have
  no memrl agent; Swimmer no memrl env; Reacher is left out: memrl's reacher
  has 1000-step episodes, the paper's 50) on InvertedPendulum (40 epochs),
  HalfCheetah (200), Hopper (200), Walker2d (300); "Each experiment is tested
  on five trials using five different random seeds".
- Fig. 2(a) (App. B.1): imagined data in the policy update: MEMB against
  alpha = 0 with exploration noise (std 0.1: the paper gives no value) and
  SVG, HalfCheetah. Fig. 2(b, c): value expansion H = 1, 2, 5 on pendulum and
  HalfCheetah.
- Fig. 3 (App. B.2): the model error over training (per-pair W1 of the next
  state, ``model/heldout_pair_w1``, and of the reward) on HalfCheetah.
- Fig. 4 (App. B.3): the true pendulum dynamics against the learned model.
- App. B.4: SAC and MEMB after "2000 epoch" (2M steps; the text's "20M" does
  not match 2000 epochs of 1000 steps): the paper scale runs these too.

CPU scale: pendulum, 4000 steps (1000 warm-up), 2 seeds: MEMB, SAC, SVG,
alpha = 0, H = 5, true model (MBPO, H = 2 and HalfCheetah left out for time).
At 4k steps MEMB is early in learning (-134 at 10k in a 1-seed run).
"""

from memrl.reproduce.grid import Figure, Paper, Reported, Row, Run

ENVS = {"inverted_pendulum": 40_000, "halfcheetah": 200_000, "hopper": 200_000, "walker2d": 300_000}
ALPHA0 = (("config.alpha", "0.0"), ("config.exploration_noise", "0.1"))
TRUE = (("config.true_model", "True"),)


def _h(h):
    return (("config.horizon", str(h)),)


def runs(scale: str) -> list[Run]:
    if scale == "cpu":

        def run(label, algo, flags=(), minutes=9.0):
            return Run(label, algo, "pendulum", 4000, 500, 2, flags, minutes)

        return [
            run("memb", "memb"),
            run("sac", "sac", minutes=2),
            run("svg", "svg", minutes=3),
            run("memb_alpha0", "memb", ALPHA0),
            run("memb_h5", "memb", _h(5), minutes=13),
            run("memb_true", "memb", TRUE),
        ]
    out = []
    for env, steps in ENVS.items():
        every = 1000 if env == "inverted_pendulum" else 5000
        out += [Run(a, a, env, steps, every, 5) for a in ("memb", "sac", "svg", "mbpo")]
    out.append(Run("memb_alpha0", "memb", "halfcheetah", 200_000, 5000, 5, ALPHA0))
    out.append(Run("memb", "memb", "pendulum", 50_000, 1000, 5))
    for h in (2, 5):
        out.append(Run(f"memb_h{h}", "memb", "pendulum", 50_000, 1000, 5, _h(h)))
        out.append(Run(f"memb_h{h}", "memb", "halfcheetah", 200_000, 5000, 5, _h(h)))
    out.append(Run("memb_true", "memb", "pendulum", 50_000, 1000, 5, TRUE))
    for env in ("halfcheetah", "walker2d", "hopper"):
        out += [Run(f"{a}_2m", a, env, 2_000_000, 20_000, 5) for a in ("sac", "memb")]
    return out


_B4 = "App. B.4 (2000 epochs)"
PAPER = Paper(
    key="memb",
    title="MEMB (Tan, Qu, Xiong, Zhang)",
    runs=runs,
    figures=(
        Figure(
            "fig1",
            "MEMB Fig. 1: return against environment steps (DDPG, SLBO, POPLIN not in memrl)",
            (Row((("MEMB", "memb"), ("SAC", "sac"), ("SVG", "svg"), ("MBPO", "mbpo"))),),
        ),
        Figure(
            "fig2",
            "MEMB Fig. 2: (a) imagined data in the policy update; (b, c) value expansion H",
            (
                Row(
                    (("MEMB", "memb"), ("alpha = 0 + noise", "memb_alpha0"), ("SVG", "svg")),
                    title="(a)",
                ),
                Row(
                    (("H = 1", "memb"), ("H = 2", "memb_h2"), ("H = 5", "memb_h5")), title="(b, c)"
                ),
            ),
        ),
        Figure(
            "fig3",
            "MEMB Fig. 3: held-out model error over training (per-pair W1)",
            (
                Row((("MEMB", "memb"),), y="model/heldout_pair_w1", title="next state"),
                Row((("MEMB", "memb"),), y="model/heldout_reward_w1", title="reward"),
            ),
        ),
        Figure(
            "fig4",
            "MEMB Fig. 4: true model against the learned model",
            (Row((("learned model", "memb"), ("true model", "memb_true"))),),
        ),
    ),
    reported=(
        Reported("Sec. 5", "inverted_pendulum", "memb", 1000, 16_000, "'just using 16 epochs'"),
        Reported("Sec. 5", "halfcheetah", "memb", 8000, 200_000, "'around 8000 at 200k steps'"),
        Reported("Sec. 5", "halfcheetah", "sac", "< 5300", 200_000, "'all the other baselines'"),
        Reported("Sec. 5", "halfcheetah", "svg", "< 5300", 200_000, "'all the other baselines'"),
        Reported("Sec. 5", "halfcheetah", "mbpo", "< 5300", 200_000, "'all the other baselines'"),
        Reported("Sec. 5", "hopper", "memb", 3300, 200_000, "'final performance'"),
        Reported("Sec. 5", "walker2d", "memb", 2900, 300_000, "'at 300k timesteps'"),
        Reported(_B4, "halfcheetah", "sac_2m", "9453.32 ± 219.34", 2_000_000),
        Reported(_B4, "walker2d", "sac_2m", "4182.07 ± 63.23", 2_000_000),
        Reported(_B4, "hopper", "sac_2m", "3433.03 ± 18.05", 2_000_000),
        Reported(_B4, "halfcheetah", "memb_2m", "8813.14 ± 53.04", 2_000_000),
        Reported(_B4, "walker2d", "memb_2m", "3544.3 ± 252.3", 2_000_000),
        Reported(_B4, "hopper", "memb_2m", "3265 ± 12.65", 2_000_000),
    ),
    notes="The MuJoCo tasks are brax's MJX ones, not gym's -v2: compare orderings.",
)
