"""PPO's pieces by hand: GAE with episode ends and truncation, the clipped loss, the actor-critic model,
the RL config, environment state round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layerwise.config import ConfigError, load_config
from layerwise.models import create_model
from layerwise.rl.config import RLConfig
from layerwise.rl.ppo import explained_variance, gae, ppo_loss

NEEDS_GYM = "these tests make environments: pip install 'layerwise[rl]'"


# --- generalized advantage estimation ------------------------------------------------------------
def test_gae_by_hand_with_termination_and_truncation() -> None:
    # one environment, 4 steps: an episode terminates at t=1, the next is truncated at t=2 (time
    # limit: bootstrapped from V(final obs) = 5), a new one runs at t=3 into the rollout's end (V = 2)
    g, lam = 0.9, 0.5
    rewards = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    values = torch.tensor([[0.5], [1.0], [1.5], [2.5]])
    terminated = torch.tensor([[False], [True], [False], [False]])
    truncated = torch.tensor([[False], [False], [True], [False]])
    next_values = torch.tensor([[1.0], [1.5], [5.0], [2.0]])  # V(s_1), ignored, V(final obs), V(last obs)
    adv, ret = gae(rewards, values, next_values, terminated, terminated | truncated, g, lam)
    d3 = 4.0 + g * 2.0 - 2.5  # 3.3
    d2 = 3.0 + g * 5.0 - 1.5  # 6.0: bootstrapped although the episode ended
    d1 = 2.0 - 1.0  # terminated: no bootstrap
    d0 = 1.0 + g * 1.0 - 0.5  # 1.4
    a3, a2, a1 = d3, d2, d1  # each of t=1, t=2 ends an episode: nothing flows back across
    a0 = d0 + g * lam * a1  # 1.4 + 0.45 = 1.85
    expected = torch.tensor([[a0], [a1], [a2], [a3]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values)


def test_gae_lambda_one_is_discounted_return_minus_value() -> None:
    # lambda = 1, no episode end: A_t = sum_k gamma^k r_{t+k} + gamma^(T-t) V_T - V_t (Monte Carlo)
    torch.manual_seed(0)
    T, g = 6, 0.97
    r, v = torch.randn(T, 3, dtype=torch.float64), torch.randn(T, 3, dtype=torch.float64)
    last = torch.randn(3, dtype=torch.float64)
    nv = torch.cat([v[1:], last[None]])
    no = torch.zeros(T, 3, dtype=torch.bool)
    adv, _ = gae(r, v, nv, no, no, g, 1.0)
    mc = torch.stack([sum(g ** (k - t) * r[k] for k in range(t, T)) + g ** (T - t) * last - v[t] for t in range(T)])
    torch.testing.assert_close(adv, mc)


# --- the clipped objective ------------------------------------------------------------------------
def test_ppo_loss_by_hand() -> None:
    # ratios 1.5 (A > 0: clipped to 1.2), 0.5 (A < 0: clipped to 0.8), 1.0 (A > 0: inside)
    ratio = torch.tensor([1.5, 0.5, 1.0])
    old = torch.log(torch.tensor([0.2, 0.4, 0.5]))
    new = old + ratio.log()
    adv = torch.tensor([2.0, -1.0, 3.0])
    new_v, old_v, ret = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.5, 0.0, 2.0]), torch.tensor([2.0, 1.0, 2.0])
    ent = torch.tensor([0.6, 0.7, 0.8])
    loss, s = ppo_loss(new, old, adv, new_v, old_v, ret, ent, clip_coef=0.2, vf_coef=0.5, ent_coef=0.01,
                       clip_vloss=True, norm_adv=False)
    # per sample max(-A r, -A clip(r)): max(-3, -2.4) = -2.4; max(0.5, 0.8) = 0.8; max(-3, -3) = -3
    pg = (-2.4 + 0.8 - 3.0) / 3
    # value: clipped V = old + clip(new - old, +-0.2) = [0.7, 0, 2]; max of squared errors [1, 1, 0] and
    # [1.69, 1, 0] -> [1.69, 1, 0]
    vl = 0.5 * (1.69 + 1.0 + 0.0) / 3
    assert s["policy_loss"].item() == pytest.approx(pg)
    assert s["value_loss"].item() == pytest.approx(vl)
    assert loss.item() == pytest.approx(pg - 0.01 * 0.7 + 0.5 * vl)
    assert s["clip_fraction"].item() == pytest.approx(2 / 3)
    kl = ((ratio - 1) - ratio.log()).mean().item()  # 0.0945 + 0.1931 + 0
    assert s["approx_kl"].item() == pytest.approx(kl) and kl > 0
    _, s2 = ppo_loss(new, old, adv, new_v, old_v, ret, ent, clip_coef=0.2, vf_coef=0.5, ent_coef=0.01,
                     clip_vloss=False, norm_adv=False)
    assert s2["value_loss"].item() == pytest.approx(0.5 * (1.0 + 1.0) / 3)


def test_ppo_loss_gradient_is_zero_where_clipped() -> None:
    # a sample pushed past the clip in the advantage's direction gets no policy gradient
    old = torch.zeros(2)
    new = torch.tensor([math.log(1.5), math.log(1.1)], requires_grad=True)
    adv = torch.tensor([1.0, 1.0])
    z = torch.zeros(2)
    loss, _ = ppo_loss(new, old, adv, z, z, z, z, clip_coef=0.2, vf_coef=0.0, ent_coef=0.0, norm_adv=False)
    loss.backward()
    assert new.grad[0].item() == 0.0
    assert new.grad[1].item() == pytest.approx(-1.1 / 2)  # d(-A r / 2)/d logp = -A r / 2


def test_advantage_normalization() -> None:
    adv = torch.tensor([1.0, 2.0, 3.0, 6.0])
    z = torch.zeros(4)
    lp = torch.zeros(4, requires_grad=True)
    _, s = ppo_loss(lp, z, adv, z, z, z, z, clip_coef=0.2, vf_coef=0.0, ent_coef=0.0, norm_adv=True)
    # ratio 1: loss = -mean(normalized A) = 0
    assert s["policy_loss"].item() == pytest.approx(0.0, abs=1e-7)


def test_explained_variance() -> None:
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(y, y) == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), 2.5), y) == pytest.approx(0.0)
    assert math.isnan(explained_variance(y, torch.ones(4)))


# --- the model ----------------------------------------------------------------------------------
def test_actor_critic_shapes_init_and_counts() -> None:
    torch.manual_seed(0)
    m = create_model("actor-critic", in_shape=(4,), num_classes=2)
    x = torch.randn(5, 4)
    logits, v = m.policy_and_value(x)
    assert logits.shape == (5, 2) and v.shape == (5,)
    torch.testing.assert_close(m(x), logits)
    assert m.num_params() == sum(p.numel() for p in m.parameters()) == 2 * (4 * 64 + 64 + 64 * 64 + 64) + 65 * 3
    assert m.flops_per_example() == 2 * 2 * (4 * 64 + 64 * 64) + 2 * 64 * 3
    # orthogonal init: W W^T = gain^2 I for the (64, 64) hidden weight; heads at 0.01 and 1
    w = m.blocks[1].linear.weight
    torch.testing.assert_close(w @ w.T, 2.0 * torch.eye(64), atol=1e-5, rtol=0)
    assert m.fc.weight.norm(dim=1).max().item() == pytest.approx(0.01, rel=1e-4)
    assert m.value_head.weight.norm().item() == pytest.approx(1.0, rel=1e-4)
    assert all(b.linear.bias.abs().sum() == 0 for b in [*m.blocks, *m.critic])
    (logits.logsumexp(-1).sum() + v.sum()).backward()
    assert all(p.grad is not None for p in m.parameters())
    with pytest.raises(ValueError, match="flat observations"):
        create_model("actor-critic", in_shape=(1, 4, 4), num_classes=2)


def test_gaussian_policy_matches_torch_distributions() -> None:
    from layerwise.rl.policy import greedy, log_prob_entropy, sample

    torch.manual_seed(0)
    m = create_model("actor-critic", in_shape=(3,), num_classes=2, policy="gaussian")
    assert m.num_params() == sum(p.numel() for p in m.parameters())  # log_std counted
    with torch.no_grad():
        m.log_std.copy_(torch.tensor([-0.5, 0.3]))
    mean = m(torch.randn(6, 3))
    actions, logp = sample(m, mean)
    assert actions.shape == (6, 2) and logp.shape == (6,)
    normal = torch.distributions.Normal(mean, m.log_std.exp())
    lp, ent = log_prob_entropy(m, mean, actions)
    torch.testing.assert_close(lp, normal.log_prob(actions).sum(-1))
    torch.testing.assert_close(logp, lp)
    torch.testing.assert_close(ent, normal.entropy().sum(-1))
    torch.testing.assert_close(greedy(m, mean), mean)
    c = create_model("actor-critic", in_shape=(3,), num_classes=4)  # categorical: argmax, no log_std
    assert not hasattr(c, "log_std") and greedy(c, torch.eye(4)[[2, 0]]).tolist() == [2, 0]


# --- config -------------------------------------------------------------------------------------
def test_rl_config_overrides_and_errors(tmp_path) -> None:
    cfg = load_config(None, ["--ppo.gamma=0.98", "--model.width=32", "--env.num_envs=8"], cls=RLConfig)
    assert cfg.ppo.gamma == 0.98 and cfg.model.args == {"width": 32} and cfg.batch_size == 8 * 128
    assert cfg.optim.lr == 2.5e-4 and cfg.optim.schedule == "linear" and cfg.optim.clip_grad_norm == 0.5
    assert cfg.num_updates == 500_000 // 1024
    with pytest.raises(ConfigError, match="unknown config key 'ppo.gama'.*Did you mean 'gamma'"):
        load_config(None, ["--ppo.gama=0.9"], cls=RLConfig)
    with pytest.raises(ConfigError, match="unknown config section 'enf'.*Did you mean 'env'"):
        load_config(None, ["--enf.id=CartPole-v1"], cls=RLConfig)
    with pytest.raises(ConfigError, match="model.widht.*Did you mean 'width'"):
        load_config(None, ["--model.widht=3"], cls=RLConfig)
    with pytest.raises(ConfigError, match="num_minibatches=3 must be >= 1 and divide"):
        load_config(None, ["--ppo.num_minibatches=3"], cls=RLConfig)
    with pytest.raises(ConfigError, match="NaN"):
        load_config(None, ["--ppo.gamma=nan"], cls=RLConfig)
    with pytest.raises(ConfigError, match="expects a whole number"):
        load_config(None, ["--ppo.num_steps=1.5"], cls=RLConfig)
    # gymnasium refuses negative seeds with a traceback (after training, for eval.seed): caught up front
    with pytest.raises(ConfigError, match="train.seed must be >= 0.*got -1"):
        load_config(None, ["--train.seed=-1"], cls=RLConfig)
    with pytest.raises(ConfigError, match="eval.seed must be >= 0.*got -5"):
        load_config(None, ["--eval.seed=-5"], cls=RLConfig)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  name: digits\n")
    with pytest.raises(ConfigError, match="unknown config section 'data'.*Valid sections: env, ppo"):
        load_config(recipe, cls=RLConfig)
    # the wrong kind of recipe for the entry point names the right one (CLI: test_rl_runs)
    import layerwise

    with pytest.raises(ConfigError, match=r"supervised recipe.*layerwise train .*layerwise\.fit"):
        layerwise.fit_rl(recipe)
    rl_recipe = tmp_path / "agent.yaml"
    rl_recipe.write_text("env:\n  id: CartPole-v1\n")
    with pytest.raises(ConfigError, match=r"reinforcement-learning recipe.*layerwise\.fit_rl"):
        layerwise.fit(rl_recipe)


# --- environments -------------------------------------------------------------------------------
def test_env_state_round_trip_is_exact() -> None:
    pytest.importorskip("gymnasium", reason=NEEDS_GYM)
    from layerwise.rl.envs import env_state, load_env_state, make_vector_env

    def steps(vec, n, rng):
        out = []
        for _ in range(n):
            obs, r, term, trunc, _ = vec.step(rng.integers(2, size=vec.num_envs))
            out.append((obs.copy(), r.copy(), term.copy(), trunc.copy()))
        return out

    a = make_vector_env("CartPole-v1", 3, max_episode_steps=20)
    a.reset(seed=7)
    steps(a, 30, np.random.default_rng(0))  # episodes end (time limit 20) and restart
    saved = env_state(a)
    after = steps(a, 40, np.random.default_rng(1))
    b = make_vector_env("CartPole-v1", 3, max_episode_steps=20)
    b.reset(seed=123)  # another state entirely, then the saved one loaded
    load_env_state(b, saved)
    again = steps(b, 40, np.random.default_rng(1))
    for x, y in zip(after, again, strict=True):
        for u, w in zip(x, y, strict=True):
            np.testing.assert_array_equal(u, w)
    assert any(t.any() for _, _, _, t in after)  # a truncation happened inside the compared steps


def test_env_errors_name_the_fix() -> None:
    pytest.importorskip("gymnasium", reason=NEEDS_GYM)
    from layerwise.rl.envs import make_env

    with pytest.raises(ConfigError, match="'CartPole-v2' is not a registered.*'CartPole-v1'"):
        make_env("CartPole-v2")
    with pytest.raises(ConfigError, match="flat Box of numbers"):
        make_env("FrozenLake-v1")  # observations are cell indices (Discrete), not a vector


def test_missing_gymnasium_says_how_to_install(monkeypatch) -> None:
    import sys

    from layerwise.rl.envs import make_env

    monkeypatch.setitem(sys.modules, "gymnasium", None)  # import gymnasium now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'layerwise\[rl\]'"):
        make_env("CartPole-v1")


def test_python_api_refuses_wrong_argument_types() -> None:
    import layerwise
    from layerwise.config import Config

    with pytest.raises(ConfigError, match="layerwise.fit_rl"):
        layerwise.fit(RLConfig())
    with pytest.raises(ConfigError, match="a Config goes to layerwise.fit"):
        layerwise.fit_rl(Config())
    with pytest.raises(ConfigError, match="not dict"):
        layerwise.fit_rl({"env": {"id": "CartPole-v1"}})
    with pytest.raises(ConfigError, match=r"separate strings.*got a list"):
        layerwise.fit_rl(None, ["--ppo.total_steps=1024"])
    with pytest.raises(ConfigError, match=r"separate strings.*got a int"):
        layerwise.fit(None, 3)
