"""Stage `base`: the model every arm starts from.

Built-in: a tiny GPT-2 with a word-level tokenizer over the task's language, pretrained on the task's
corpus (good, bad and mixed behaviour alike). Otherwise an external model (a folder, hub id, GGUF file or
a package shipping one), copied into the cache as a plain float32 model folder with a pad token
(compare/lm/external.py), so every later stage loads it the same way. Its tokenizer keeps the model's chat
template (`base.chat_template: auto`) or is saved without one (`none`), and the suite's system turn
(`base.system_prompt`) if it sets one: later stages read them there (compare/lm/chat.py).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from compare.compute import NO_MODEL, Tokens
from compare.lm.external import materialize, resolve
from compare.lm.loading import EOS, save_model, set_seed
from compare.lm.tiny import build_word_tokenizer, parameter_count, pretrain, steps_for_ratio, tiny_gpt2
from compare.stages.common import Context, make_task
from compare.stages.spec import StageSpec


def run(params: dict, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    if "source" in params:
        source = params["source"]
        chat = source.get("chat_template", "auto") == "auto"
        model = resolve(source["model"], source["gguf_file"], source["package"])
        materialize(model, out, chat, source.get("system_prompt"))
        return
    tiny = params["tiny"]
    task = make_task(params["task"])
    tokenizer = build_word_tokenizer(task.vocabulary())
    tokenizer.padding_side = "right"
    set_seed(tiny["seed"])  # initialisation seeded too, whatever ran before in this process
    model = tiny_gpt2(tokenizer, tiny["n_layer"], tiny["n_head"], tiny["n_embd"], tiny["n_positions"])
    corpus = task.pretraining_corpus(tiny["corpus_size"], random.Random(f"corpus-{tiny['seed']}"))
    parameters = parameter_count(model)
    # tokens a text holds with its EOS, as pretraining sees it (the same tokenizer, no padding)
    mean_tokens = sum(len(ids) for ids in tokenizer([t + EOS for t in corpus])["input_ids"]) / len(corpus)
    ratio = tiny.get("tokens_per_parameter")
    steps = (
        tiny["steps"]
        if ratio is None
        else steps_for_ratio(ratio, parameters, tiny["batch_size"], mean_tokens)
    )
    losses = pretrain(
        model, tokenizer, corpus, steps, tiny["batch_size"], tiny["lr"], tiny["seed"], "pretrain base"
    )
    save_model(model, tokenizer, out)
    (out / "log_history.json").write_text(json.dumps([{"step": i, "loss": x} for i, x in enumerate(losses)]))
    tail = losses[-min(len(losses), 100) :]  # the loss it ended at, smoothed over its last steps
    (out / "pretraining.json").write_text(
        json.dumps(
            {
                "parameters": parameters,
                "steps": steps,
                "tokens": round(steps * tiny["batch_size"] * mean_tokens),
                "tokens_per_parameter": steps * tiny["batch_size"] * mean_tokens / parameters,
                "final_loss": sum(tail) / len(tail),
            },
            indent=1,
        )
    )


def compute(params: dict, folder: Path, inputs: dict, counter) -> Tokens:
    """The tiny base's pretraining: steps x batch_size texts, each at most n_positions tokens (an upper
    bound: batches are as wide as their longest text); an external model is not trained here."""
    tiny = params.get("tiny")
    if not tiny:
        return NO_MODEL
    made = folder / "pretraining.json"  # the steps it ran: `steps`, or those `tokens_per_parameter` set
    steps = json.loads(made.read_text())["steps"] if made.is_file() else tiny["steps"]
    return Tokens(steps * tiny["batch_size"] * tiny["n_positions"], 0.0, "pretraining: texts at n_positions")


SPEC = StageSpec(
    kind="base", version=4, run=run, compute=compute
)  # 4: the tiny model's GELU is one fused kernel
