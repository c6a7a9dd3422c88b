import numpy as np
import pytest
import torch
from torch import nn

from validate import mlp
from validate.mlp import MLPProbe, ReplicaNet, build_model, replica_param_count


def test_default_architecture_parameter_count():
    # Linear(512, 2048) + LN + 3 x (LN + Linear(2048, 4096) + Linear(4096, 2048)) + LN + Linear(2048, 100)
    by_hand = (512 * 2048 + 2048) + 2 * 2048 + 3 * (2 * 2048 + 2048 * 4096 + 4096 + 4096 * 2048 + 2048) \
        + 2 * 2048 + (2048 * 100 + 100)
    assert by_hand == 51_626_084
    net = ReplicaNet(512, 100)
    assert sum(p.numel() for p in net.parameters()) == by_hand == replica_param_count(512, 100)
    assert (mlp.HIDDEN_THIN, mlp.HIDDEN_WIDE, mlp.BATCH_SIZE, mlp.EPOCHS, mlp.INIT_SEED) == (2048, 4096, 128, 3, 1278)
    assert not any(isinstance(m, nn.Dropout) for m in net.modules())


def test_forward_layernorm_placement():
    torch.manual_seed(0)
    net = ReplicaNet(5, 3, thin=8, wide=16)
    x = torch.randn(4, 5)
    h = net.ln_input(net.input_projection(x))
    for ln, b in zip(net.layernorms, net.bottlenecks):
        h = h + b.l2(torch.nn.functional.gelu(b.l1(ln(h))))
    expected = net.linear_output(net.ln_output(h))
    assert torch.allclose(net(x), expected)


def test_init_is_organisers_seed_and_order():
    net, opt = build_model(7, 2, thin=8, wide=16)
    torch.manual_seed(1278)  # their order: input projection first, then LN, LNs, bottlenecks, LN, output
    first = nn.Linear(7, 8)
    assert torch.equal(net.input_projection.weight, first.weight)
    again, _ = build_model(7, 2, thin=8, wide=16)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), again.parameters()))
    assert isinstance(opt, torch.optim.AdamW)
    group = opt.param_groups[0]
    assert group["lr"] == 1e-3 and group["weight_decay"] == 0.01 and group["betas"] == (0.9, 0.999)


def test_batches_in_row_order_without_shuffling(monkeypatch):
    seen = []
    original = ReplicaNet.forward

    def spy(self, x):
        if self.training:
            seen.append(x[:, 0].round().long().tolist())
        return original(self, x)

    monkeypatch.setattr(ReplicaNet, "forward", spy)
    n = 300
    X = np.zeros((n, 3), dtype=np.float32)
    X[:, 0] = np.arange(n)
    y = (np.arange(n) % 2).astype(np.float32)
    res = MLPProbe(thin=8, wide=16, progress=False, device="cpu").score("churn", X, y, y)
    assert [len(b) for b in seen] == [128, 128, 44] * 3
    assert sum(seen, []) == list(range(n)) * 3
    assert len(res["epochs"]) == 3
    assert res["score"] == max(e["score"] for e in res["epochs"])
    assert res["best_epoch"] == int(np.argmax([e["score"] for e in res["epochs"]]))


def test_learns_a_simple_signal():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 4)).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.standard_normal(2000) > 0).astype(np.float32)
    res = MLPProbe(thin=16, wide=32, progress=False, device="cpu").score("conversion", X, y, y)
    assert res["score"] > 0.9
    assert not MLPProbe(thin=16, wide=32).is_replica and MLPProbe().is_replica


def test_propensity_figures_have_parts():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((256, 6)).astype(np.float32)
    Y = (rng.random((256, 5)) < 0.3).astype(np.float32)
    res = MLPProbe(thin=8, wide=16, progress=False, device="cpu").score(
        "propensity_sku", X, Y, Y, popularity=np.arange(1.0, 6.0))
    best = res["epochs"][res["best_epoch"]]
    assert set(best) == {"score", "auroc", "diversity", "novelty"}
    assert best["score"] == pytest.approx(0.8 * best["auroc"] + 0.1 * best["diversity"] + 0.1 * best["novelty"])


def test_bf16_precision_keeps_the_loop_and_runs_the_matmuls_in_bfloat16(monkeypatch):
    """mlp16: the same net, initial weights, row order and fp32 master weights; only the matmuls are bfloat16."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 4)).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.standard_normal(2000) > 0).astype(np.float32)
    dtypes = []
    real_trunk = ReplicaNet.trunk

    def spy(self, x):
        out = real_trunk(self, x)
        dtypes.append(out.dtype)
        return out

    monkeypatch.setattr(ReplicaNet, "trunk", spy)
    fp32 = MLPProbe(thin=16, wide=32, progress=False, device="cpu").score("conversion", X, y, y)
    assert set(dtypes) == {torch.float32}
    dtypes.clear()
    probe = MLPProbe(thin=16, wide=32, progress=False, device="cpu", precision="bf16")
    bf16 = probe.score("conversion", X, y, y)
    assert set(dtypes) == {torch.bfloat16}  # training and prediction ran the trunk under bfloat16 autocast
    assert bf16["score"] > 0.9 and abs(bf16["score"] - fp32["score"]) < 0.01
    assert not MLPProbe(precision="bf16").is_replica
    with pytest.raises(ValueError, match="precision"):
        MLPProbe(thin=8, wide=8, progress=False, precision="fp8").score("conversion", X, y, y)


def test_make_probe_mlp16_is_the_full_net_at_bf16():
    from validate.probe import make_probe
    p = make_probe("mlp16", progress=False, device="cpu")
    assert (p.thin, p.wide, p.precision) == (mlp.HIDDEN_THIN, mlp.HIDDEN_WIDE, "bf16") and not p.is_replica
    assert make_probe("mlp", progress=False, device="cpu").is_replica
