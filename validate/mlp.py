"""The organisers' downstream network and training loop (docs/challenge.md section 5), without PyTorch Lightning.

Net: Linear(D, thin) -> LayerNorm -> 3 x [x + Linear(wide, thin)(GELU(Linear(thin, wide)(LayerNorm(x))))] ->
LayerNorm -> Linear(thin, outputs), thin = 2048, wide = 4096. Modules are created in the organisers' order right
after ``torch.manual_seed(1278)``, so the initial weights are theirs. Training: AdamW (lr 1e-3, weight decay 0.01),
BCE on logits (mean), batch 128 in the given row order (no shuffling), 3 epochs, the validation metrics after each
epoch, the task's score = the best epoch's.

``precision="bf16"`` (the ``mlp16`` decision probe, docs/probes.md) keeps all of that (net, initial weights, loop,
row order, fp32 master weights and fp32 AdamW) and only runs the trunk's forward and backward matmuls under bfloat16
autocast (the output layer stays fp32): ~2.5x cheaper per candidate on a CPU with AVX512-BF16 (docs/decision.md).
Its figures are close to the replica's but are not the replica's.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from competition.heap import large_blocks_in_heap
from competition.progress import progress as progress_of

from embedders.distributed import resolve_device as _resolve_device
from validate.cpu import free_cores
from validate.metrics import task_score

INIT_SEED = 1278
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.01  # torch.optim.AdamW's default, which the organisers keep
EPOCHS = 3
HIDDEN_THIN = 2048
HIDDEN_WIDE = 4096
N_BLOCKS = 3
#: Rows per forward pass when predicting (no gradients): only speed, the logits are row-wise.
PREDICT_BATCH = 2048
#: Arithmetic of the forward and backward passes: "fp32" is the replica; "bf16" autocasts the matmuls to bfloat16.
PRECISIONS = ("fp32", "bf16")


def autocast(device: torch.device, precision: str):
    """The context the net's forward runs in: bfloat16 autocast for ``precision="bf16"``, else nothing."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


class _Bottleneck(nn.Module):
    """Linear(thin, wide) -> GELU -> Linear(wide, thin)."""

    def __init__(self, thin: int, wide: int):
        super().__init__()
        self.l1 = nn.Linear(thin, wide)
        self.l2 = nn.Linear(wide, thin)
        self.gelu = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(self.gelu(self.l1(x)))


class ReplicaNet(nn.Module):
    """The organisers' net. Input float32 ``(batch, embedding_dim)``, output logits ``(batch, output_dim)``."""

    def __init__(self, embedding_dim: int, output_dim: int, thin: int = HIDDEN_THIN, wide: int = HIDDEN_WIDE):
        super().__init__()
        # Creation order decides the initial weights under a fixed seed: keep it as the organisers have it.
        self.input_projection = nn.Linear(embedding_dim, thin)
        self.ln_input = nn.LayerNorm(thin)
        self.layernorms = nn.ModuleList([nn.LayerNorm(thin) for _ in range(N_BLOCKS)])
        self.bottlenecks = nn.ModuleList([_Bottleneck(thin, wide) for _ in range(N_BLOCKS)])
        self.ln_output = nn.LayerNorm(thin)
        self.linear_output = nn.Linear(thin, output_dim)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden state ``(batch, thin)`` before the output LayerNorm."""
        x = self.ln_input(self.input_projection(x))
        for norm, block in zip(self.layernorms, self.bottlenecks):
            x = x + block(norm(x))
        return x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Output LayerNorm and linear layer: logits ``(batch, output_dim)``."""
        return self.linear_output(self.ln_output(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def logits_at(net: ReplicaNet, x: torch.Tensor, precision: str) -> torch.Tensor:
    """``net(x)`` in ``precision``: at "bf16" the trunk runs under bfloat16 autocast and the head in fp32, so that
    the logits keep fp32 resolution (bfloat16 logits have 8 bits of mantissa: ties that lower an AUROC)."""
    if precision == "fp32":
        return net(x)
    with autocast(x.device, precision):
        h = net.trunk(x)
    return net.head(h.float())


def replica_param_count(embedding_dim: int, output_dim: int, thin: int = HIDDEN_THIN, wide: int = HIDDEN_WIDE) -> int:
    """Number of trainable parameters of :class:`ReplicaNet` (closed form)."""
    linear = lambda i, o: i * o + o  # noqa: E731
    return (linear(embedding_dim, thin) + 2 * thin + N_BLOCKS * (2 * thin + linear(thin, wide) + linear(wide, thin))
            + 2 * thin + linear(thin, output_dim))


def build_model(embedding_dim: int, output_dim: int, thin: int = HIDDEN_THIN, wide: int = HIDDEN_WIDE,
                seed: int = INIT_SEED, device: torch.device | str = "cpu") -> tuple[ReplicaNet, torch.optim.Optimizer]:
    """The net initialised under ``torch.manual_seed(seed)`` (on the CPU, as the organisers build it), moved to
    ``device``, and its AdamW optimiser (lr 1e-3, weight decay 0.01, default betas and eps).

    On the CPU the optimiser uses torch's fused kernel: the same update up to float rounding, and about 10x faster
    than the default per-parameter loop there (0.04 s instead of 0.35 s per step for the 51.6M-parameter net, a third
    of the whole step). On CUDA it keeps torch's default (foreach), as the organisers' Lightning run had it."""
    torch.manual_seed(seed)
    net = ReplicaNet(embedding_dim, output_dim, thin, wide).to(device)
    fused = {"fused": True} if torch.device(device).type == "cpu" else {}
    opt = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY, **fused)
    return net, opt


def resolve_device(device: str | None = None, thin: int = HIDDEN_THIN, wide: int = HIDDEN_WIDE,
                   threads: int | None = None) -> torch.device:
    """:func:`embedders.distributed.resolve_device` (None or 'auto': CUDA when present, else CPU), plus the
    replica's thread policy: on CPU, torch uses ``threads``, by default one per free core
    (:func:`validate.cpu.free_cores`) for the real net and a single thread for small test nets (thin * wide below
    2**20, whose steps are too short to gain from threads)."""
    dev = _resolve_device(device)
    if dev.type == "cpu":
        torch.set_num_threads(threads or (free_cores() if thin * wide >= 2**20 else 1))
    return dev


@dataclass
class MLPProbe:
    """Trains the replica on train-window labels and scores validation-window labels of the same rows.

    thin / wide: hidden sizes; anything but 2048 / 4096 is NOT the replica (tests use small nets for speed).
    epochs / batch_size: the organisers' 3 / 128. device: None = CUDA when present, else CPU.
    threads: CPU threads for torch (None: see :func:`resolve_device`; on a busy machine 1 can be faster).
    precision: "fp32" (the replica) or "bf16" (matmuls under bfloat16 autocast, the ``mlp16`` probe; not the
    replica).
    """

    thin: int = HIDDEN_THIN
    wide: int = HIDDEN_WIDE
    epochs: int = EPOCHS
    batch_size: int = BATCH_SIZE
    device: str | None = None
    threads: int | None = None
    progress: bool = True
    precision: str = "fp32"

    @property
    def is_replica(self) -> bool:
        return ((self.thin, self.wide, self.epochs, self.batch_size, self.precision)
                == (HIDDEN_THIN, HIDDEN_WIDE, EPOCHS, BATCH_SIZE, "fp32"))

    def score(self, task: str, X: np.ndarray, y_train: np.ndarray, y_valid: np.ndarray,
              popularity: np.ndarray | None = None) -> dict:
        """Train, validate after each epoch, return the best epoch's figures.

        X: float32 ``(n, D)`` rows in the organisers' client order. y_train / y_valid: ``(n,)`` or ``(n, k)`` 0/1.
        Returns the best epoch's :func:`~validate.metrics.task_score` figures plus ``"best_epoch"``, ``"epochs"``
        (every epoch's figures) and ``"seconds"``.
        """
        t0 = time.perf_counter()
        device = resolve_device(self.device, self.thin, self.wide, self.threads)
        autocast(device, self.precision)  # an unknown precision fails here, before any work
        y_tr = np.asarray(y_train, dtype=np.float32).reshape(len(X), -1)
        xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)
        yt = torch.from_numpy(y_tr).to(device)
        with large_blocks_in_heap():  # the same bytes, no page faults per step (competition.heap)
            epochs = self._train(task, xt, yt, y_valid, popularity, device)
        best = int(np.argmax([e["score"] for e in epochs]))  # the first best on ties, like the organisers' max()
        return {**epochs[best], "best_epoch": best, "epochs": epochs, "seconds": time.perf_counter() - t0}

    def _train(self, task: str, xt: torch.Tensor, yt: torch.Tensor, y_valid: np.ndarray,
               popularity: np.ndarray | None, device: torch.device) -> list[dict]:
        """The organisers' loop: every epoch over the rows in order, batch by batch, then the validation figures."""
        net, opt = build_model(xt.shape[1], yt.shape[1], self.thin, self.wide, device=device)
        loss_fn = nn.BCEWithLogitsLoss()
        n = len(xt)
        epochs = []
        for epoch in range(self.epochs):
            net.train()
            starts = range(0, n, self.batch_size)
            for s in progress_of(starts, desc=f"{task} epoch {epoch + 1}/{self.epochs}", leave=False,
                                 enabled=self.progress):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(logits_at(net, xt[s:s + self.batch_size], self.precision), yt[s:s + self.batch_size])
                loss.backward()
                opt.step()
            epochs.append(task_score(task, y_valid, predict(net, xt, precision=self.precision), popularity))
        return epochs


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor, batch_size: int = PREDICT_BATCH, precision: str = "fp32") -> np.ndarray:
    """Logits float32 ``(n, outputs)`` of ``net`` on ``x`` (eval mode, no gradients; matmuls in ``precision``)."""
    net.eval()
    out = [logits_at(net, x[s:s + batch_size], precision).float().cpu() for s in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()
