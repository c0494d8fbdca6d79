"""Chat templates: a prompt is a user turn and a completion the assistant's reply, when the model has one.

Whether a run is conversational is decided once, by the base model's tokenizer: the `base` stage keeps
the chat template a model folder, hub model or GGUF file brings (`base.chat_template: auto`) or drops it
(`none`), and every later stage reads the tokenizer of its input folder. The built-in tiny model has no
template, so its runs stay plain text.

With a template, every path goes through the libraries' own code, so the token ids a stage trains on
are the ones the sampler starts from:

- TRL's trainers get conversational datasets (`conversational`): `prompt` a list with one user message,
  `completion` / `chosen` / `rejected` a list with one assistant message; TRL applies the template
  (the prompt with `add_generation_prompt=True`, the completion after it).
- Sampling, log-probs and our PPO's rollouts start from `tokenizer.apply_chat_template([user],
  add_generation_prompt=True)` (`prompt_token_ids`).
- A reward model scores `apply_chat_template([user, assistant])` (`scored_token_ids`), the text TRL's
  RewardTrainer trained it on; without a template, prompt + completion + EOS, as before.

A suite's `base.system_prompt` is saved with the base model's tokenizer (its config's `system_prompt`,
which every stage's saved tokenizer carries on) and put before every user turn (`system_turn`); unset,
the template adds its own default system turn, if it has one.

Task prompts and completions stay plain strings everywhere else (the data files, the gold reward, the
report): the template is applied where tokens are made.
"""

from __future__ import annotations

Messages = list[dict[str, str]]
TEXT_FIELDS = ("completion", "chosen", "rejected")  # the assistant's side of a TRL dataset row
SYSTEM_PROMPT = "system_prompt"  # the tokenizer config's key that holds the suite's system turn


def uses_chat(tokenizer) -> bool:
    """Whether `tokenizer` carries a chat template (then prompts and completions are messages)."""
    return bool(getattr(tokenizer, "chat_template", None))


def user(prompt: str) -> Messages:
    return [{"role": "user", "content": prompt}]


def system_turn(tokenizer) -> Messages:
    """The suite's system turn that `tokenizer` carries (`base.system_prompt`), or none."""
    text = (getattr(tokenizer, "init_kwargs", None) or {}).get(SYSTEM_PROMPT)
    return [] if text is None else [{"role": "system", "content": text}]


def asked(tokenizer, prompt: str) -> Messages:
    """A prompt as the conversation the assistant answers: the system turn, if any, and the user's."""
    return system_turn(tokenizer) + user(prompt)


def assistant(text: str) -> Messages:
    return [{"role": "assistant", "content": text}]


def prompt_text(prompt: str | Messages) -> str:
    """The task's prompt string back from a conversational prompt (TRL hands reward functions those)."""
    if isinstance(prompt, str):
        return prompt
    return "".join(m["content"] for m in prompt if m["role"] == "user")


def conversational(tokenizer, rows: list[dict]) -> list[dict]:
    """TRL dataset rows in its conversational format when `tokenizer` has a template, else as they are.

    `prompt` becomes one user message (after the system turn, if the tokenizer carries one); `completion`, `chosen` and `rejected` one assistant message each;
    other columns (KTO's `label`) are kept.
    """
    if not uses_chat(tokenizer):
        return rows
    return [
        {
            k: asked(tokenizer, v) if k == "prompt" else assistant(v) if k in TEXT_FIELDS else v
            for k, v in row.items()
        }
        for row in rows
    ]


def _template_ids(tokenizer, conversations: list[Messages], add_generation_prompt: bool) -> list[list[int]]:
    if not conversations:
        return []
    out = tokenizer.apply_chat_template(
        conversations, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True
    )
    return [list(ids) for ids in out["input_ids"]]


def prompt_token_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """The token ids a completion of each prompt follows: the templated user turn with the assistant's
    generation prompt (as TRL tokenises a conversational prompt), or the plain prompt text."""
    if uses_chat(tokenizer):
        return _template_ids(tokenizer, [asked(tokenizer, p) for p in prompts], add_generation_prompt=True)
    return tokenizer(list(prompts), add_special_tokens=False)["input_ids"]


def scored_token_ids(tokenizer, prompts: list[str], completions: list[str]) -> list[list[int]]:
    """What a reward model reads for each (prompt, completion): the templated conversation, as TRL's
    RewardTrainer tokenises a conversational pair; or prompt + completion + EOS, as it does plain text
    (it appends EOS to every training text, docs/ppo.md row 8)."""
    if uses_chat(tokenizer):
        conversations = [asked(tokenizer, p) + assistant(c) for p, c in zip(prompts, completions)]
        return _template_ids(tokenizer, conversations, add_generation_prompt=False)
    texts = [p + c + tokenizer.eos_token for p, c in zip(prompts, completions)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]
