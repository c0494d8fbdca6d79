"""The memory estimate: what a stage needs at its peak, from the base model's size and the stage's settings.

Preflight (`compare/preflight.py:check_memory`) compares it with the machine's memory before anything is
loaded; the executor gives it to Ray as each stage's memory; docs/own_model.md tabulates it. Nothing here
loads weights: the model's size comes from its config or GGUF header (`compare.lm.external`).

At its peak a stage holds, per base-model parameter (`weights`):

- every trained copy: its weights, gradients and AdamW's two moments, four numbers (torch's AdamW keeps
  its moments in the weights' dtype); every frozen copy: its weights. A number is 4 bytes in float32, 2 in
  bfloat16 (`bf16_weights`). With LoRA only the frozen bases count (`Memory.lora` of them: the adapters
  are small, a reference is the policy with its adapter disabled). The copies are each stage's
  `SPEC.memory` (`compare.stages.spec.Memory`).

and, for one training step (`activations`):

- each layer's stored activations, 34 bytes per token and hidden unit in 16-bit (Korthikanti et al. 2022,
  "Reducing Activation Recomputation in Large Transformer Models", eq. 1, without the attention-score term,
  which fused attention does not store); twice that when computing in float32. With activation
  checkpointing (`gradient_checkpointing`), each layer keeps only its input (2 bytes per token and hidden
  unit in 16-bit) and one layer at a time is recomputed in full.
- the logits of every token over the vocabulary and their log-softmax, float32: 8 bytes per token and
  vocabulary entry (the losses read log-probs in float32), for a stage that trains a policy; a reward
  model's head is a scalar. A stage that trains two models in one step (PPO: policy and value) holds
  both models' activations (`Memory.forwards`).

A stage that rolls out (PPO) also scores its whole rollout batch at once without gradients: the policy's
and then the reference's float32 logits and log-softmax for every token of `rollout` sequences, held one
model at a time. Its peak is the larger of that and one training step.

A step holds `sequences` sequences of `tokens` tokens: the batch (PPO: a minibatch; a pair-wise loss: both
sides) of prompts plus completions. An external model's prompts are only read when a stage runs, so a
prompt is taken to be `ASSUMED_PROMPT_TOKENS` long and an offline stage's completion
`ASSUMED_COMPLETION_TOKENS`, unless the task is built in: then its longest prompt at `TOKENS_PER_WORD`
and the evaluation's `max_new_tokens` (preflight). An online stage's completion is its `max_new_tokens`.
Then `OVERHEAD` on the whole, for the allocator's slack and the libraries.
"""

from __future__ import annotations

from typing import NamedTuple

from compare.lm.external import OVERHEAD

ASSUMED_PROMPT_TOKENS = 256
ASSUMED_COMPLETION_TOKENS = 256
TOKENS_PER_WORD = 2  # a built-in task's words under a real model's subword tokenizer, generously
ACTIVATION_BYTES = 34  # per token, layer and hidden unit, 16-bit, all of a layer's activations kept
CHECKPOINT_BYTES = 2  # per token, layer and hidden unit, 16-bit: only the layer's input kept
LOGIT_BYTES = 8  # per token and vocabulary entry: float32 logits and their log-softmax


class Shape(NamedTuple):
    """A base model's size: parameters, and (when known) the dimensions its activations scale with."""

    parameters: int
    layers: int = 0
    hidden: int = 0
    vocab: int = 0


class StageLoad(NamedTuple):
    """One stage as its memory depends on it: its kind and the settings that change what it holds."""

    kind: str
    lora: bool = False
    bf16_weights: bool = False
    checkpointing: bool = False
    half: bool = False  # computes in 16-bit (bf16 weights, or bf16 autocast)
    sequences: int = 0  # sequences in one training step (0: no training step, e.g. evaluation)
    tokens: int = 0  # tokens in each
    rollout: int = 0  # sequences scored at once without gradients (PPO's rollout batch), 0: none


def stage_load(
    kind: str,
    settings,
    half: bool = False,
    prompt_tokens: int = ASSUMED_PROMPT_TOKENS,
    completion_tokens: int = ASSUMED_COMPLETION_TOKENS,
) -> StageLoad:
    """The `StageLoad` of a recipe stage with these settings; `half`: the run computes in bf16 anyway (a
    GPU with bf16 support, or `bf16_cpu`); the prompt's tokens, and an offline stage's completion's, where
    they are known better than the assumption (a built-in task's prompts)."""
    from compare.stages import SPECS

    spec = SPECS[kind]
    rollout = getattr(settings, "rollout_batch_size", None) or 0
    if rollout:  # PPO: one minibatch per forward and backward pass
        sequences = rollout // settings.minibatches
    else:
        sequences = getattr(settings, "batch_size", 0) * spec.memory.sequences
    completion = getattr(settings, "max_new_tokens", completion_tokens)
    bf16 = bool(getattr(settings, "bf16_weights", False))
    return StageLoad(
        kind,
        lora=spec.lora(settings),
        bf16_weights=bf16,
        checkpointing=bool(getattr(settings, "gradient_checkpointing", False)),
        half=half or bf16 or bool(getattr(settings, "bf16_cpu", False)),
        sequences=sequences,
        tokens=prompt_tokens + completion,
        rollout=rollout,
    )


def weight_bytes(stage: StageLoad) -> float:
    """Bytes per base parameter for the weights (and optimiser state) the stage holds."""
    from compare.stages import SPECS

    return SPECS[stage.kind].memory.bytes_per_parameter(stage.lora, 2 if stage.bf16_weights else 4)


def activation_bytes(shape: Shape, stage: StageLoad) -> float:
    """Bytes of one training step's activations and logits, or of scoring a rollout batch when that is
    more (0 when the model's dimensions are unknown)."""
    from compare.stages import SPECS, Produces

    spec = SPECS[stage.kind]
    tokens = stage.sequences * stage.tokens
    if not tokens or not shape.layers:
        return 0.0
    scale = 1 if stage.half else 2  # float32 activations are twice 16-bit ones
    if stage.checkpointing:
        per_token = shape.hidden * (CHECKPOINT_BYTES * shape.layers + ACTIVATION_BYTES) * scale
    else:
        per_token = shape.hidden * ACTIVATION_BYTES * shape.layers * scale
    logits = LOGIT_BYTES * shape.vocab if spec.produces is Produces.POLICY else 0  # an RM: a scalar head
    rollout = stage.rollout * stage.tokens * LOGIT_BYTES * shape.vocab
    return max(tokens * (per_token * spec.memory.forwards + logits), rollout)


def stage_needed(model: int | Shape, stage: StageLoad | tuple) -> float:
    """Bytes one stage needs at its peak, overhead included."""
    shape = model if isinstance(model, Shape) else Shape(int(model))
    stage = StageLoad(*stage)
    return (shape.parameters * weight_bytes(stage) + activation_bytes(shape, stage)) * OVERHEAD


def memory_needed(model: int | Shape, stages) -> float:
    """Bytes the hungriest of `stages` needs: `model` is a parameter count or a `Shape`, each stage a
    `StageLoad` or a (kind, uses LoRA) pair."""
    return max(stage_needed(model, stage) for stage in stages)
