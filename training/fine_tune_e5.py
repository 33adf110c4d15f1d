"""e5's body trained in torch: its top layers learn, its lower layers run once per text.

multilingual-e5-small's 4-bit weights are dequantised into a transformers ``BertModel``
(`model.encoders.e5_torch.build_body`). Only its top ``k`` of 12 layers learn; the word rows, the
embeddings and the lower layers are frozen, so their output for a text never changes while
training. `FrozenStates` runs them once per distinct text and keeps each text's hidden states
(``<s>`` + the text's tokens + ``</s>``, the first 510-token window: the service's window, which
every pair text and title + excerpt fits), and each step runs only the top layers on a batch of
cached states, then the service's mean pooling over every token. On 2 cores that makes a step on
16 pairs ~0.4 s with 2 layers learning, ~0.9 s with 4 (unloaded, ~100 tokens a text), instead of
the whole 12-layer pass for every text of every step.

The loss is CoSENT on the pairs' targets (`model.coverage.pair_map.cosent`), AdamW, linear warm-up then
a constant rate, gradients clipped to norm 1, as MiniLM's body learns (`fine_tune_body`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from model.coverage.pair_map import cosent
from model.encoders.e5_file import E5File
from model.encoders.e5_torch import E5TorchEncoder, build_body

LAYERS = 12


@dataclass
class FrozenStates:
    """Each text's hidden states after the frozen layers, at every depth asked for.

    ``states[depth][i]``: text ``i``'s (tokens, 384) hidden states after ``depth`` layers (float32);
    ``raw``: the frozen model's own pooled, unit vectors (all 12 layers), what e5 gives untrained.
    """

    body: Any
    states: dict[int, list[Any]]
    raw: npt.NDArray[np.float32]
    tokens: list[int]
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        depths: Sequence[int],
        *,
        prefix: str = "passage",
        batch_size: int = 16,
        full: bool = True,
        half: bool = False,
    ) -> FrozenStates:
        """``full``: run all 12 layers for `raw` too (else `raw` stays zero and the pass stops at
        the deepest depth asked for); ``half``: keep the states as float16 (half the memory)."""
        import torch

        started, cpu = time.perf_counter(), time.process_time()
        encoder = E5TorchEncoder(prefix=prefix, backend="torch")
        weights = E5File()
        body = build_body(weights)
        ids = [
            [weights.bos, *content[: E5TorchEncoder.window], weights.eos]
            for content in encoder.token_ids(list(texts))
        ]
        states: dict[int, list[Any]] = {d: [None] * len(ids) for d in depths}
        raw = np.zeros((len(ids), weights.hidden), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # batches of like lengths pad little
        layers = body.bert.encoder.layer
        if not full:  # the top layers' output is never needed: stop below them
            body.bert.encoder.layer = layers[: max(depths)]
        dtype = torch.float16 if half else torch.float32
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                longest = max(len(ids[i]) for i in chunk)
                padded = np.zeros((len(chunk), longest), dtype=np.int64)
                mask = np.zeros((len(chunk), longest), dtype=np.int64)
                for row, i in enumerate(chunk):
                    padded[row, : len(ids[i])] = ids[i]
                    mask[row, : len(ids[i])] = 1
                out = body.bert(
                    inputs_embeds=torch.from_numpy(weights.word_rows(padded)),
                    attention_mask=torch.from_numpy(mask),
                    output_hidden_states=True,
                )
                hidden = out.hidden_states  # embeddings, then after each layer
                if full:
                    m = torch.from_numpy(mask).unsqueeze(-1).float()
                    pooled = (hidden[-1] * m).sum(1) / m.sum(1)
                    raw[chunk] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
                for depth in depths:
                    for row, i in enumerate(chunk):
                        states[depth][i] = hidden[depth][row, : len(ids[i])].to(dtype).clone()
        body.bert.encoder.layer = layers
        return cls(
            body,
            states,
            raw,
            [len(i) for i in ids],
            round(time.perf_counter() - started, 1),
            round(time.process_time() - cpu, 1),
        )


@dataclass
class TopLayers:
    """The top ``k`` layers of e5, trained; `vectors` pools texts' cached states through them."""

    k: int
    layers: Any
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    stopped_by: str = "steps"

    def vectors(
        self, frozen: FrozenStates, rows: Sequence[int], batch_size: int = 32
    ) -> npt.NDArray[np.float32]:
        import torch

        self.layers.eval()
        out = np.zeros((len(rows), frozen.raw.shape[1]), dtype=np.float32)
        states = frozen.states[LAYERS - self.k]
        order = sorted(range(len(rows)), key=lambda r: -len(states[rows[r]]))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                out[chunk] = _pooled(self.layers, [states[rows[r]] for r in chunk]).numpy()
        return out


def _pooled(layers: Any, states: list[Any]) -> Any:
    """The top layers over a batch of cached states, mean-pooled over every token, unit length."""
    import torch

    longest = max(len(s) for s in states)
    hidden = torch.zeros((len(states), longest, states[0].shape[1]))
    mask = torch.zeros((len(states), longest))
    for row, s in enumerate(states):
        hidden[row, : len(s)] = s.float()
        mask[row, : len(s)] = 1.0
    # An additive mask, broadcast over heads and queries (what eager and sdpa attention both take).
    additive = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
    for layer in layers:
        hidden = layer(hidden, attention_mask=additive)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    m = mask.unsqueeze(-1)
    return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)


def train_top_layers(
    frozen: FrozenStates,
    pairs: Sequence[tuple[int, int, float]],
    *,
    k: int,
    steps: int,
    batch_size: int = 16,
    learning_rate: float = 5e-5,
    seed: int = 0,
    weights: npt.NDArray[np.float64] | None = None,
    deadline: float | None = None,
) -> TopLayers:
    """A copy of e5's top ``k`` layers trained with CoSENT on ``pairs`` (text row a, text row b,
    target; a higher target ranks more alike) for ``steps`` steps of ``batch_size`` pairs drawn
    with probability ``weights`` (default: uniform), or until ``deadline`` (perf_counter)."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    layers = copy.deepcopy(frozen.body.bert.encoder.layer[LAYERS - k :])
    for parameter in layers.parameters():
        parameter.requires_grad_(True)
    layers.train()
    optimiser = torch.optim.AdamW(layers.parameters(), lr=learning_rate, weight_decay=0.01)
    warmup = max(1, min(50, steps // 10))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(1.0, (step + 1) / warmup))
    states = frozen.states[LAYERS - k]
    p = None if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
    result = TopLayers(k, layers)
    started, cpu = time.perf_counter(), time.process_time()
    for step in range(steps):
        if step and deadline is not None and time.perf_counter() >= deadline:
            result.stopped_by = "time budget"
            break
        chosen = rng.choice(len(pairs), size=min(batch_size, len(pairs)), replace=False, p=p)
        batch = [pairs[int(c)] for c in chosen]
        vectors = _pooled(layers, [states[a] for a, _, _ in batch] + [states[b] for _, b, _ in batch])
        half = len(batch)
        cosines = (vectors[:half] * vectors[half:]).sum(-1)
        value = cosent(cosines, torch.tensor([t for _, _, t in batch], dtype=torch.float32))
        value.backward()
        torch.nn.utils.clip_grad_norm_(layers.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        optimiser.zero_grad(set_to_none=True)
        result.losses.append(float(value.detach()))
    result.steps = len(result.losses)
    result.seconds = round(time.perf_counter() - started, 1)
    result.cpu_seconds = round(time.process_time() - cpu, 1)
    layers.eval()
    return result
