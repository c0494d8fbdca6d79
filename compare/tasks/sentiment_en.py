"""`sentiment_en`: continue a real English opening positively and fluently (the IMDb task of DPO, made local).

A prompt is the unfinished opening of a review or a message, written for this project from templates
(a frame times a subject), and it stops mid-thought so that a continuation follows:

    I went to the sushi bar near the station last night and
    Hi Priya, just a quick note about the team meeting on Monday:

The completion continues it (" the food was wonderful. I would happily eat there again."). This is the
positive-continuation task of Rafailov et al. (2023, section 6.1) with VADER (Hutto and Gilbert, 2014)
in place of a sentiment classifier, so that the gold reward needs no download and no GPU. It is meant for
a real pretrained LM (e.g. SmolLM2-135M); the built-in tiny word-level model can also learn it (every
whitespace token of the prompts, demonstrations and corpus is in `vocabulary()`).

Gold reward. Let T be the completion's whitespace tokens and W its words (a token stripped of surrounding
punctuation and lowercased is a word when what remains is letters, optionally joined by ' or -, or a
number). Function words are the grammatical glue of English (the, was, I, of, and, ... and any word with
an apostrophe); English prose is typically 30-55% function words, a pile of praise words ("Great!
Wonderful! Lovely!"), word salad or another language almost none. Then

    positivity  = VADER compound score of the completion text                      in [-1, 1]
    malformed   = the largest of  #tokens of T that are not words / |T|           (junk: "###", "10x0")
                                  max(0, 3 - |W|) / 3                             (too little text)
                                  max(0, 0.2 - function-word share of W) / 0.2    (not English prose)
                  and 1 when the completion is empty                              in [0, 1]
    repetition  = the larger of   the share of W's bigrams that repeat an earlier one (rep-2, Welleck
                                  et al. 2020) and the share of sentences that repeat an earlier one
                                                                                  in [0, 1)
    reward      = positivity - malformed - repetition                             in [-3, 1]

so a fluent, clearly positive continuation scores about 0.6 to 0.95 and pays no penalty; an empty one
scores -1; praise said over and over ("great great great great", VADER 0.9) or piled up without grammar
("Great! Wonderful! Lovely!") ends below zero; junk costs its share of the text. `off_topic` is always 0
(VADER has no notion of topic), and a single echo of the prompt is not penalised (its sentiment is
neutral, so it earns nothing). `well_formed`: malformed is 0 (at least three words, every token a word,
at least a fifth of them function words).

Splits. Train and in-distribution (ID) prompts come from four topic groups (restaurants, films, books,
gadgets); the ID prompts are held out of the training pool (as whole prompts: their frames and subjects
occur in training, their combinations do not). Out-of-distribution (OOD) prompts come from two groups
that no demonstration, comparison or rollout shows: hotels, and messages to friends and colleagues (a
different register). The pretraining corpus covers every group, as in `reviews`.

Demonstrator: one to three sentences about the prompt's topic, each positive with probability
`demonstrator_quality`, otherwise negative (70%) or neutral (30%), from the same sentence forms the
corpus uses, never repeating itself; its praise is plain (one adjective, rarely "really" or "very": "the
food was good."), so a policy can do better than the demonstrator even at quality 1. Pretraining corpus:
prompts of every group followed by positive, negative and mixed continuations equally often, plus 20%
degenerate text (a sentence or a word said again and again, a continuation cut off mid-sentence, the
opening echoed), so that the base model can write all of them and alignment selects behaviour rather
than teaching it.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
import string
from dataclasses import dataclass
from functools import cached_property

from compare.tasks.task import ID_SPLIT, GoldScore, Split, SplitRole, Task

MIN_WORDS = 3  # fewer words than this is "too little text"
MIN_FUNCTION_SHARE = 0.2  # fewer function words than this is not English prose
FUNCTION_WORDS = frozenset(
    """a an the and or but nor so if then than that this these those there here
    i me my mine we us our you your he him his she her it its they them their
    is am are was were be been being have has had do does did will would can could should shall may might must
    to of in on at by for with from about as into over after before under up down out off through
    not no very too just also only all some any each every more most much many such
    what which who whom whose when where why how since without while because until during between
    against both either neither other another again once ever never even still yet well own same few less
    one two""".split()
)
PUNCTUATION = string.punctuation + "“”‘’…—–"
WORD = re.compile(r"[A-Za-zÀ-ÿ]+(?:['’-][A-Za-zÀ-ÿ]+)*|\d+(?:[.,:]\d+)*")
SENTENCE_END = re.compile(r"[.!?\n]+")


# -- the gold reward --------------------------------------------------------------------------------------
@functools.cache
def _analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def words_of(text: str) -> tuple[list[str], int]:
    """The words of `text` (lowercased, surrounding punctuation stripped) and its number of non-words."""
    words, junk = [], 0
    for token in text.split():
        core = token.strip(PUNCTUATION)
        if core and WORD.fullmatch(core):
            words.append(core.lower())
        else:
            junk += 1
    return words, junk


def function_word_share(words: list[str]) -> float:
    """Share of `words` that are function words or contractions (0 for no words)."""
    return sum(w in FUNCTION_WORDS or "'" in w or "’" in w for w in words) / len(words) if words else 0.0


def repeated_share(items: list) -> float:
    """Share of `items` equal to an earlier item: 1 - distinct / total (0 for an empty list)."""
    return 1.0 - len(set(items)) / len(items) if items else 0.0


def repetition_of(text: str, words: list[str]) -> float:
    """The larger of rep-2 over `words` and the share of repeated sentences of `text`."""
    bigrams = list(zip(words, words[1:]))
    sentences = [tuple(words_of(s)[0]) for s in SENTENCE_END.split(text)]
    return max(repeated_share(bigrams), repeated_share([s for s in sentences if s]))


def sentiment_gold(completion: str) -> GoldScore:
    """The gold score of a continuation (the module docstring gives the formula)."""
    words, junk = words_of(completion)
    n_tokens = len(words) + junk
    if n_tokens == 0:  # nothing written at all
        return GoldScore(reward=-1.0, well_formed=False, malformed=1.0)
    shortness = max(0, MIN_WORDS - len(words)) / MIN_WORDS
    disfluency = max(0.0, MIN_FUNCTION_SHARE - function_word_share(words)) / MIN_FUNCTION_SHARE
    malformed = max(junk / n_tokens, shortness, disfluency)
    positivity = _analyzer().polarity_scores(completion)["compound"]
    repetition = repetition_of(completion, words)
    return GoldScore(
        reward=positivity - malformed - repetition,
        well_formed=malformed == 0.0,
        positivity=positivity,
        malformed=malformed,
        repetition=repetition,
        off_topic=0.0,
    )


# -- the language: topic groups, prompt frames and sentence forms ------------------------------------------
@dataclass(frozen=True)
class Topic:
    """One topic group: what prompts are about and what a continuation says about it.

    Sentences are written as clauses (lowercase first word unless "I") so that the first one continues
    the opening; later ones are capitalised.
    """

    subjects: tuple[str, ...]
    frames: tuple[str, ...]  # "{subject}" (and "{name}") filled in; each ends where a clause can follow
    aspects: tuple[str, ...]
    copula: str  # "the food was good" / "the plan is good"
    likes: tuple[str, ...]  # "I loved the food"
    dislikes: tuple[str, ...]
    remarks: dict[str, tuple[str, ...]]  # whole sentences by sentiment
    names: tuple[str, ...] = ("",)


REVIEW_FRAMES = (
    "I had heard a lot about {subject}, and",
    "Here is what I think of {subject}:",
    "So, about {subject}:",
    "A few words about {subject}:",
    "Last month I tried {subject} for the first time, and",
)
PAST_LIKES = ("loved", "really enjoyed", "liked")
PAST_DISLIKES = ("hated", "disliked", "was disappointed by")

ID_TOPICS = {
    "restaurant": Topic(
        subjects=(
            "the new Italian place on Main Street",
            "the sushi bar near the station",
            "the little taco stand downtown",
            "the Thai restaurant on the corner",
            "the burger place by the river",
            "the family diner on Elm Street",
            "the vegan cafe near my office",
            "the steakhouse in the old mill",
            "the noodle shop on Market Street",
            "the pizza place next door",
        ),
        frames=(
            "I went to {subject} last night and",
            "We finally tried {subject} for my birthday, and",
            "My sister took me to {subject} on Friday and",
            "We had lunch at {subject} today and",
            "I ordered takeaway from {subject} and",
            "We walked into {subject} without a booking, and",
            "After two visits to {subject}, I can say that",
            *REVIEW_FRAMES,
        ),
        aspects=("the food", "the service", "the menu", "the dessert", "the atmosphere", "the wine list"),
        copula="was",
        likes=PAST_LIKES,
        dislikes=PAST_DISLIKES,
        remarks={
            "pos": ("I would happily eat there again.", "it was a lovely evening.", "we had a great time."),
            "neg": ("it was a waste of money.", "the whole evening was a disappointment.", "I regret going."),
            "neu": (
                "we got there around seven.",
                "I ordered the soup of the day.",
                "it was busy for a weekday.",
            ),
        },
    ),
    "film": Topic(
        subjects=(
            "the new superhero film",
            "the documentary about whales",
            "the French comedy everyone is watching",
            "the latest space adventure",
            "the remake of that old western",
            "the animated film about a robot",
            "the crime drama on the streaming site",
            "the musical about a small town bakery",
            "the spy thriller set in Berlin",
            "the film my brother picked",
        ),
        frames=(
            "I watched {subject} at the cinema on Friday and",
            "We saw {subject} last weekend, and",
            "I finally got around to {subject} yesterday, and",
            "My friends took me to {subject} and",
            "I streamed {subject} on the train home and",
            "I stayed up late to watch {subject}, and",
            *REVIEW_FRAMES,
        ),
        aspects=(
            "the acting",
            "the story",
            "the ending",
            "the soundtrack",
            "the camera work",
            "the dialogue",
        ),
        copula="was",
        likes=PAST_LIKES,
        dislikes=PAST_DISLIKES,
        remarks={
            "pos": ("I laughed all the way through.", "it was a joy to watch.", "I would watch it again."),
            "neg": ("it was a waste of time.", "I hated every minute of it.", "it ruined my evening."),
            "neu": (
                "it runs for about two hours.",
                "I watched it with my brother.",
                "the cinema was half full.",
            ),
        },
    ),
    "book": Topic(
        subjects=(
            "the new mystery novel",
            "the biography of the famous chef",
            "the fantasy series my cousin lent me",
            "the short story collection from the library",
            "the history of the silk road",
            "the novel set on a Scottish island",
            "the memoir by the retired astronaut",
            "the science fiction classic from the sixties",
            "the graphic novel about two sisters",
            "the travel book about Norway",
        ),
        frames=(
            "I finished {subject} last night and",
            "I started reading {subject} on holiday, and",
            "My book club picked {subject} this month, and",
            "I read {subject} in one weekend and",
            "I borrowed {subject} from a neighbour, and",
            "I listened to the audiobook of {subject} and",
            *REVIEW_FRAMES,
        ),
        aspects=(
            "the writing",
            "the plot",
            "the ending",
            "the main character",
            "the first chapter",
            "the cover",
        ),
        copula="was",
        likes=PAST_LIKES,
        dislikes=PAST_DISLIKES,
        remarks={
            "pos": (
                "I would gladly recommend it to a friend.",
                "it was a joy to read.",
                "I loved every page.",
            ),
            "neg": ("it was a waste of time.", "I regret buying it.", "the whole book was a disappointment."),
            "neu": (
                "it is about three hundred pages long.",
                "I read it on the train.",
                "it has twelve chapters.",
            ),
        },
    ),
    "gadget": Topic(
        subjects=(
            "my new phone",
            "the wireless headphones I bought",
            "this smartwatch",
            "the new tablet",
            "the budget laptop",
            "the robot vacuum",
            "the e-reader my parents gave me",
            "the portable speaker",
            "the electric toothbrush",
            "the fitness tracker",
        ),
        frames=(
            "I have been using {subject} for a month now and",
            "I bought {subject} last week, and",
            "I upgraded to {subject} in the spring and",
            "I unboxed {subject} this morning and",
            "I took {subject} on a long trip, and",
            "After a week with {subject}, I can say that",
            *REVIEW_FRAMES,
        ),
        aspects=("the battery", "the screen", "the sound", "the design", "the price", "the app"),
        copula="was",
        likes=PAST_LIKES,
        dislikes=PAST_DISLIKES,
        remarks={
            "pos": ("I use it every day and love it.", "it was a great buy.", "it made my life easier."),
            "neg": ("it broke after two weeks.", "it was a waste of money.", "I regret buying it."),
            "neu": ("it comes in three colours.", "it arrived on Tuesday.", "it charges over a cable."),
        },
    ),
}
OOD_TOPICS = {
    "hotel": Topic(
        subjects=(
            "the hotel by the harbour",
            "a small inn in the mountains",
            "the guesthouse near the old town",
            "the beach resort on the island",
            "the airport hotel",
            "a cabin by the lake",
            "the hostel near the central station",
            "the boutique hotel in the city centre",
        ),
        frames=(
            "We stayed at {subject} for three nights and",
            "I booked {subject} for our anniversary, and",
            "We checked into {subject} late on Sunday and",
            "I spent a work trip at {subject}, and",
            "Our family spent a week at {subject} and",
            *REVIEW_FRAMES,
        ),
        aspects=("the room", "the bed", "the breakfast", "the view", "the location", "the shower"),
        copula="was",
        likes=PAST_LIKES,
        dislikes=PAST_DISLIKES,
        remarks={
            "pos": (
                "we would happily stay there again.",
                "it was a perfect place to relax.",
                "we had a great time.",
            ),
            "neg": (
                "the whole stay was a disappointment.",
                "it was a waste of money.",
                "I regret booking it.",
            ),
            "neu": (
                "we arrived just after noon.",
                "the room was on the third floor.",
                "we took the bus there.",
            ),
        },
    ),
    "message": Topic(
        subjects=(
            "the trip next weekend",
            "the team meeting on Monday",
            "the project report",
            "your birthday party",
            "the new schedule",
            "the move to the new office",
            "the budget for next year",
            "the dinner on Friday",
        ),
        frames=(
            "Dear {name}, about {subject},",
            "Hi {name}, just a quick note about {subject}:",
            "Hey {name}! After thinking about {subject},",
            "{name}, regarding {subject}, I think",
            "Hello {name}, I read your message about {subject} and",
        ),
        aspects=("the plan", "the schedule", "the idea", "the new draft", "the venue", "the timing"),
        copula="is",
        likes=("love", "really like", "am excited about"),
        dislikes=("am worried about", "am unhappy with", "am disappointed by"),
        remarks={
            "pos": (
                "I am so glad we are doing this!",
                "thanks so much for organising it!",
                "it will be great.",
            ),
            "neg": (
                "this is a real problem for me.",
                "I am sorry, but it is a mess.",
                "it was a bad surprise.",
            ),
            "neu": (
                "let me know what you think.",
                "I will send the details tomorrow.",
                "we can talk on Monday.",
            ),
        },
        names=("Sam", "Maria", "Alex", "Priya", "Tom", "Jo"),
    ),
}
TOPICS = {**ID_TOPICS, **OOD_TOPICS}
POSITIVE = ("good", "nice", "great", "lovely", "wonderful", "excellent")
NEGATIVE = ("bad", "poor", "awful", "terrible", "disappointing")
NEUTRAL = ("simple", "standard", "ordinary", "typical", "different")
INTENSIFIERS = ("really", "very")
DEMONSTRATOR_INTENSIFIED = 0.1  # the demonstrator rarely says "really" or "very"
FORM_WEIGHTS = {"aspect": 0.6, "like": 0.25, "remark": 0.15}  # how often each sentence form is written
NOISE_WORDS = (
    "great",
    "good",
    "wonderful",
    "bad",
    "terrible",
    "the",
    "and",
    "very",
    "really",
)  # run-on words


def frame_prompts(topic: Topic) -> list[str]:
    """Every prompt of a topic group: each frame with each subject (and name, for messages)."""
    prompts = []
    for frame, subject, name in itertools.product(topic.frames, topic.subjects, topic.names):
        if name or "{name}" not in frame:
            prompts.append(frame.format(subject=subject, name=name))
    return sorted(set(prompts))


def sentence_forms(topic: Topic, sentiment: str) -> dict[str, list[str]]:
    """Every sentence (in clause form) of one sentiment for a topic, by form, before any intensifier."""
    adjectives = {"pos": POSITIVE, "neg": NEGATIVE, "neu": NEUTRAL}[sentiment]
    ends = (".", "!") if sentiment != "neu" else (".",)
    forms = {
        "aspect": [
            f"{aspect} {topic.copula} {adj}{end}"
            for aspect, adj, end in itertools.product(topic.aspects, adjectives, ends)
        ],
        "remark": list(topic.remarks[sentiment]),
    }
    if sentiment != "neu":
        verbs = topic.likes if sentiment == "pos" else topic.dislikes
        forms["like"] = [
            f"I {verb} {aspect}{end}" for verb, aspect, end in itertools.product(verbs, topic.aspects, ends)
        ]
    return forms


def capitalised(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def join_sentences(sentences: list[str]) -> str:
    """A completion: the first sentence continues the prompt, the others start with a capital."""
    return " " + " ".join([sentences[0], *map(capitalised, sentences[1:])]) if sentences else ""


class SentimentEn(Task):
    """Real English openings, a VADER gold reward; every random choice is seeded, so it is deterministic."""

    name = "sentiment_en"
    split_specs = (
        ID_SPLIT,
        Split("ood", SplitRole.SHIFT, "OOD", "unseen topics (hotels, messages to friends and colleagues)"),
    )
    default_demonstrator_quality = 0.6

    # -- prompts ---------------------------------------------------------------------------------------
    @cached_property
    def _topic_of_prompt(self) -> dict[str, str]:
        return {prompt: topic for topic in TOPICS for prompt in frame_prompts(TOPICS[topic])}

    @cached_property
    def _splits(self) -> dict[str, list[str]]:
        rng = random.Random(f"sentiment_en-prompts-{self.seed}")
        id_pool = [p for topic in ID_TOPICS.values() for p in frame_prompts(topic)]
        ood_pool = [p for topic in OOD_TOPICS.values() for p in frame_prompts(topic)]
        rng.shuffle(id_pool)
        rng.shuffle(ood_pool)
        # ID evaluation prompts are held out of the training pool (at most a quarter of the ID prompts;
        # past that they repeat); the training pool is the rest, in a seeded order, repeated if too small.
        held_out = id_pool[: min(self.n_eval_prompts, len(id_pool) // 4)]
        train_pool = id_pool[len(held_out) :]
        return {
            "train": [train_pool[i % len(train_pool)] for i in range(self.n_train_prompts)],
            "id": [held_out[i % len(held_out)] for i in range(self.n_eval_prompts)],
            "ood": [ood_pool[i % len(ood_pool)] for i in range(self.n_eval_prompts)],
        }

    def prompts(self, split: str) -> list[str]:
        return list(self._splits[split])

    def topic_of(self, prompt: str) -> str:
        """The topic group of a prompt of this task (or of any text naming one of its subjects)."""
        if prompt in self._topic_of_prompt:
            return self._topic_of_prompt[prompt]
        for name, topic in TOPICS.items():
            if any(subject in prompt for subject in topic.subjects):
                return name
        raise ValueError(f"not a prompt of the sentiment_en task: {prompt!r}")

    # -- gold reward -----------------------------------------------------------------------------------
    def gold(self, prompt: str, completion: str) -> GoldScore:
        return sentiment_gold(completion)

    # -- writers: the demonstrator and the pretraining corpus ------------------------------------------
    @cached_property
    def _forms(self) -> dict[tuple[str, str], dict[str, list[str]]]:
        return {(t, s): sentence_forms(TOPICS[t], s) for t in TOPICS for s in ("pos", "neg", "neu")}

    def _sentence(self, rng: random.Random, topic: str, sentiment: str, intensified: float) -> str:
        forms = self._forms[topic, sentiment]
        names = list(forms)
        form = rng.choices(names, weights=[FORM_WEIGHTS[n] for n in names])[0]
        sentence = rng.choice(forms[form])
        if form == "aspect" and sentiment != "neu" and rng.random() < intensified:
            *head, adjective = sentence.split()  # "the food was good." -> "the food was really good."
            sentence = " ".join([*head, rng.choice(INTENSIFIERS), adjective])
        return sentence

    def _continuation(
        self, topic: str, rng: random.Random, p_positive: float, n_sentences: int, intensified: float
    ) -> list[str]:
        sentences: list[str] = []
        said: set[tuple[str, str]] = set()  # word bigrams written so far
        for _ in range(n_sentences):
            for _attempt in range(10):  # a careful writer does not repeat itself (nor an aspect)
                u = rng.random()
                sentiment = (
                    "pos" if u < p_positive else ("neg" if u < p_positive + (1 - p_positive) * 0.7 else "neu")
                )
                sentence = self._sentence(rng, topic, sentiment, intensified)
                words = words_of(sentence)[0]
                bigrams = set(zip(words, words[1:]))
                if not bigrams & said:
                    break
            sentences.append(sentence)
            said |= bigrams
        return sentences

    def demonstrate(self, prompt: str, rng: random.Random) -> str:
        """An expert's continuation: fluent, on topic, positive only `demonstrator_quality` of the time."""
        topic = self.topic_of(prompt)
        sentences = self._continuation(
            topic, rng, self.demonstrator_quality, rng.randint(1, 3), DEMONSTRATOR_INTENSIFIED
        )
        return join_sentences(sentences)

    def pretraining_corpus(self, n: int, rng: random.Random) -> list[str]:
        texts = []
        prompts = sorted(self._topic_of_prompt)
        for _ in range(n):
            prompt = rng.choice(prompts)
            topic = self._topic_of_prompt[prompt]
            mood = rng.random()  # positive, negative or mixed continuations, equally often
            p_positive = 0.9 if mood < 1 / 3 else (0.1 if mood < 2 / 3 else 0.5)
            sentences = self._continuation(topic, rng, p_positive, rng.randint(1, 4), intensified=0.3)
            completion = join_sentences(sentences)
            noise = rng.random()
            if noise < 0.07:  # repetitive: one sentence said again and again
                completion = join_sentences([sentences[0]] * rng.randint(2, 4))
            elif noise < 0.11:  # repetitive: one word run on
                completion = " " + " ".join([rng.choice(NOISE_WORDS)] * rng.randint(3, 12))
            elif noise < 0.17:  # broken: stops mid-sentence
                words = completion.split()
                completion = " " + " ".join(words[: rng.randint(1, max(1, len(words) - 1))])
            elif noise < 0.20:  # the opening echoed instead of continued
                completion = " " + prompt
            texts.append(prompt + completion)
        return texts

    @cached_property
    def _vocabulary(self) -> list[str]:
        words = {w for prompt in self._topic_of_prompt for w in prompt.split()}
        for forms in self._forms.values():
            for sentence in itertools.chain.from_iterable(forms.values()):
                words |= set(sentence.split()) | set(capitalised(sentence).split())
        words |= set(NOISE_WORDS) | set(INTENSIFIERS)
        return sorted(words)

    def vocabulary(self) -> list[str]:
        return list(self._vocabulary)
