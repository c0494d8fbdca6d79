"""Output diversity as pure functions: lists of whitespace-tokenised texts in, numbers out.

Three yardsticks for the generalisation axis of the report (docs/design.md, "output diversity within and
across prompts"):

- `ead_n`: distinct-n corrected for how many n-grams were drawn (Liu et al. 2022), so that arms that
  write longer answers are not marked down merely for their length;
- `self_bleu`: how much each sample repeats the others (Zhu et al. 2018, Texygen); lower = more diverse;
- `within_and_across`: any of these (or `compare.metrics.distinct_n`) within one prompt's samples and
  across prompts.

Plain distinct-n lives in `compare.metrics.distinct_n` and is reused here, not re-implemented.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Hashable, Mapping, Sequence

from compare.metrics import distinct_n


def _ngram_count(texts: Sequence[str], n: int) -> int:
    """Number of n-gram positions C in `texts` (the denominator of distinct-n), split on whitespace."""
    return sum(max(len(t.split()) - n + 1, 0) for t in texts)


def ead_n(texts: Sequence[str], n: int, vocab_size: int) -> float:
    """Expectation-adjusted distinct-n (Liu et al. 2022, "Rethinking and Refining the Distinct Metric").

    Distinct-n divides the number of distinct n-grams by the number of n-grams C, which falls as C grows
    even for a uniformly random writer. EAD divides instead by the number of distinct n-grams expected
    when C n-grams are drawn uniformly from all N = V^n possible ones:

        EAD_n = #distinct / E[#distinct],   E[#distinct] = N * (1 - ((N - 1) / N) ** C),   N = V ** n

    (the paper states it for tokens, N = V; n-grams over a vocabulary of V words give N = V^n).
    The expectation is evaluated as -N * expm1(C * log1p(-1/N)) so that it stays exact when N is huge
    and (N - 1) / N rounds to 1 in floating point. For N >> C it tends to C and EAD_n to distinct-n.

    Args:
        texts: whitespace-tokenised texts, pooled (as in `distinct_n`).
        n: n-gram order, >= 1.
        vocab_size: V, the size of the vocabulary the words are drawn from, >= 1.

    Returns:
        EAD_n >= 0 (may exceed 1); 0.0 when the texts hold no n-gram, as `distinct_n` does.
    """
    if n < 1 or vocab_size < 1:
        raise ValueError(f"ead_n needs n >= 1 and vocab_size >= 1, got n={n}, vocab_size={vocab_size}")
    count = _ngram_count(texts, n)
    if count == 0:
        return 0.0
    distinct = distinct_n(list(texts), n) * count
    space = float(vocab_size) ** n  # N = V^n
    if space == 1.0:  # one possible n-gram: every draw is it
        expected = 1.0
    else:
        expected = -space * math.expm1(count * math.log1p(-1.0 / space))
    return distinct / expected


def self_bleu(texts: Sequence[str], max_ngram_order: int = 4) -> float:
    """Self-BLEU (Zhu et al. 2018, "Texygen"): how much each text repeats the rest; lower = more diverse.

        Self-BLEU = 1/K * sum_k BLEU(hypothesis = texts[k], references = texts[:k] + texts[k+1:])

    with sacrebleu's sentence-level BLEU (geometric mean of clipped n-gram precisions up to
    `max_ngram_order` times the brevity penalty; "exp" smoothing of zero counts, effective order for
    texts shorter than the order), rescaled from sacrebleu's 0-100 to 0-1 like Texygen's.

    Tokenisation: sacrebleu's "none" tokenizer, i.e. split on whitespace only. Our texts are already
    whitespace-tokenised words, and "none" keeps exactly the tokens that `distinct_n` and `ead_n` count.
    "13a" (the WMT default) would split punctuation off words a second time, e.g. "it's." -> "it's .",
    so the n-grams that BLEU matches would no longer be the ones the other diversity metrics count.

    Cost: K sentence scores against K - 1 references each, O(K^2) in the number of texts.

    Args:
        texts: whitespace-tokenised texts, e.g. the samples for one prompt.
        max_ngram_order: highest n-gram order in BLEU (4 as in BLEU-4).

    Returns:
        Self-BLEU in [0, 1]; nan for fewer than 2 texts (no references).
    """
    if len(texts) < 2:
        return math.nan
    from sacrebleu.metrics import BLEU  # imported here: only this metric needs sacrebleu

    bleu = BLEU(tokenize="none", effective_order=True, max_ngram_order=max_ngram_order)
    scores = [
        bleu.sentence_score(text, list(texts[:k]) + list(texts[k + 1 :])).score / 100.0
        for k, text in enumerate(texts)
    ]
    return statistics.fmean(scores)


def within_and_across(
    texts_by_prompt: Mapping[Hashable, Sequence[str]], metric: Callable[[list[str]], float]
) -> dict[str, float]:
    """A diversity metric within one prompt's samples and across prompts.

        within = 1/P * sum_p metric(samples of prompt p)
        across = metric([first sample of prompt p for every p])

    "within" asks whether a policy says different things to the same prompt (RLHF is reported to
    collapse here, Kirk et al. 2024); "across" asks whether it says the same thing to every prompt.
    A metric with extra arguments is passed as e.g. `lambda ts: ead_n(ts, 2, vocab_size)`.

    Prompts with no samples are skipped. A nan from the metric (e.g. `self_bleu` on one sample)
    propagates into the average rather than being dropped silently.

    Args:
        texts_by_prompt: prompt key -> that prompt's sampled texts (same number per prompt and arm,
            fairness rule 1, so that arms are compared like with like).
        metric: list of texts -> number, e.g. `distinct_n`, `self_bleu`.

    Returns:
        {"within": ..., "across": ...}; nan for both when no prompt has a sample.
    """
    samples = [list(texts) for texts in texts_by_prompt.values() if len(texts) > 0]
    if not samples:
        return {"within": math.nan, "across": math.nan}
    within = statistics.fmean(metric(texts) for texts in samples)
    across = metric([texts[0] for texts in samples])
    return {"within": float(within), "across": float(across)}
