"""A built-in synthetic preference task whose gold reward is known.

When no real preference data is at hand, the demo trains on this instead, and can then measure how well the
trained model recovered the gold reward. Prompts ask for advice on one of eight everyday topics; candidate
responses are composed from phrase banks (opener, advice body, concrete detail, padding, closer), so
wording varies and the held-out split asks about subjects the training split never mentions.

Labels are sampled from the gold reward by Bradley–Terry, P(a ≻ b) = σ(β (g_a − g_b)), so the label noise
is known: `bayes_accuracy` is the best accuracy any scorer can expect on the sampled labels.
Everything is drawn from a seeded `random.Random`, so a (seed, split) pair always gives the same records.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import TypeVar

from rewardkit.data.record import Message, PreferenceRecord, Response, user_prompt
from rewardkit.models.scorer import FunctionScorer

T = TypeVar("T")

DEFAULT_BETA = 2.0  # Bayes accuracy about 0.885 on pairs: roughly one label in nine goes against gold
SPLITS = ("train", "test")
HELD_OUT_SUBJECTS = 2  # the last subjects of each topic appear only in the test split
MAX_RESPONSES = 8  # candidates per prompt must have distinct gold values, and only so many are likely


@dataclass(frozen=True)
class Topic:
    name: str
    lexicon: frozenset[str]  # the words that mark text as being about this topic (gold uses them)
    subjects: tuple[str, ...]  # what a prompt asks about; the last HELD_OUT_SUBJECTS are test-only
    advice: tuple[str, ...]  # on-topic advice sentences; "{subject}" is filled in
    details: tuple[str, ...]  # concrete details; "{n}" becomes a number


def _topic(name: str, lexicon: str, subjects: Sequence[str], advice: Sequence[str],
           details: Sequence[str]) -> Topic:
    return Topic(name, frozenset(lexicon.split()), tuple(subjects), tuple(advice), tuple(details))


TOPICS: tuple[Topic, ...] = (
    _topic("cooking",
           "cook cooking recipe bake baking oven dough bread sauce pasta ingredients ingredient taste simmer "
           "knife pan flour soup kitchen season salt rice chef's boil",
           ["baking sourdough bread", "making a tomato sauce", "cooking pasta", "using a chef's knife",
            "making soup from scratch", "baking cookies in the oven", "cooking rice in a pan",
            "seasoning a cast iron pan"],
           ["When it comes to {subject}, use fresh ingredients and taste as you cook.",
            "Keep the heat moderate so nothing burns in the pan.",
            "Read the whole recipe before you start and prep every ingredient first.",
            "Season a little at a time, since you can add salt but never take it out.",
            "For {subject}, let the oven or pan heat fully before the food goes in.",
            "Clean the kitchen as you cook so the last step is not a mess."],
           ["Let it simmer for about {n} minutes.", "Use roughly {n} grams of flour for a small batch.",
            "Bake it at around 1{n}0 degrees.", "Boil the pasta for {n} minutes and taste one piece."]),
    _topic("gardening",
           "garden gardening plant plants soil watering seeds compost sunlight roots leaves tomatoes weeds "
           "pot prune pruning grow growing houseplants herbs roses clay mulch",
           ["growing tomatoes", "keeping houseplants alive", "starting seeds indoors", "building compost",
            "pulling weeds in the garden", "growing herbs in a pot", "pruning roses", "improving clay soil"],
           ["For {subject}, check the soil with your finger before watering.",
            "Most plants want plenty of sunlight, so find the brightest spot you have.",
            "Mix compost into the soil so the roots get air and nutrients.",
            "Pull weeds while they are small, before their roots go deep.",
            "With {subject}, watch the leaves: yellow leaves usually mean too much watering.",
            "Spread mulch around each plant to keep the soil moist."],
           ["Give each plant about {n} centimetres of space.", "Aim for {n} hours of direct sunlight a day.",
            "Plant the seeds {n} millimetres deep.", "Add compost every {n} weeks while plants are growing."]),
    _topic("fitness",
           "exercise workout workouts muscle muscles stretch stretching running strength squats gym cardio "
           "reps fitness training weights warming race jog",
           ["starting a running habit", "building muscle strength", "stretching after a workout",
            "doing squats with good form", "getting back into the gym", "training for a first race",
            "fitting workouts into a busy week", "warming up before cardio"],
           ["For {subject}, start lighter than you think and add weights slowly.",
            "Consistency beats intensity, so plan each workout like an appointment.",
            "Warm up with light cardio so your muscles are ready.",
            "Focus on form during squats and every other lift before adding reps.",
            "With {subject}, mix strength training with easy running days.",
            "Stretch gently after training while your muscles are still warm."],
           ["Do {n} sets of eight reps.", "Jog for {n} minutes at an easy pace.",
            "Rest about {n} seconds between sets of squats.", "Do a workout {n} times a week to start."]),
    _topic("travel",
           "travel traveling trip flight flights luggage packing pack hotel passport airport itinerary "
           "destination booking journey abroad train suitcase",
           ["packing light for a trip", "finding cheap flights", "traveling abroad for the first time",
            "planning a trip itinerary", "choosing a hotel", "getting through the airport quickly",
            "renewing a passport", "booking a train journey"],
           ["For {subject}, book flights midweek when prices tend to drop.",
            "Pack a small suitcase and leave room for what you bring back from the trip.",
            "Keep your passport and booking details in one easy place.",
            "Plan a loose itinerary so the journey has room for surprises.",
            "With {subject}, read recent hotel reviews before booking anything.",
            "Arrive at the airport early so security lines are not a worry."],
           ["Book about {n} weeks ahead for the best flights.",
            "Get to the airport {n} hours before the flight.",
            "Pack no more than {n} outfits for the trip.", "Keep {n} copies of your passport page."]),
    _topic("money",
           "budget budgeting money savings save saving spending expenses debt income bank account invest "
           "investing bills paycheck groceries credit fund expense",
           ["making a monthly budget", "saving money on groceries", "paying off credit card debt",
            "building an emergency savings fund", "tracking my spending", "starting to invest",
            "opening a bank account", "cutting monthly expenses"],
           ["For {subject}, write down every expense for a month before changing anything.",
            "Pay yourself first by moving money into savings on payday.",
            "List your debt from highest interest to lowest and attack the top one.",
            "Automate your bills so nothing is paid late.",
            "With {subject}, compare your spending against your income each month.",
            "Keep the savings account separate from your everyday bank account."],
           ["Save {n} percent of each paycheck.", "Keep {n} months of expenses in the fund.",
            "Set a grocery budget of {n}0 dollars a week.", "Review the budget every {n} weeks."]),
    _topic("sleep",
           "sleep sleeping bedtime bed bedroom insomnia nap naps tired dreams alarm wake waking caffeine "
           "melatonin pillow asleep schedule",
           ["falling asleep faster", "fixing my sleep schedule", "waking up without an alarm",
            "dealing with insomnia", "taking better naps", "making my bedroom better for sleep",
            "cutting caffeine for better sleep", "getting up early without feeling tired"],
           ["For {subject}, keep the same bedtime every night, weekends included.",
            "Keep the bedroom dark, quiet and cool.",
            "Avoid caffeine in the afternoon so it is out of your system by bedtime.",
            "Put screens away before bed and read something calm instead.",
            "With {subject}, get daylight soon after you wake to set your clock.",
            "If you cannot fall asleep, get out of bed for a while rather than lying there."],
           ["Aim for {n} hours of sleep.", "Stop caffeine {n} hours before bedtime.",
            "Keep naps under {n}0 minutes.", "Set the bedroom to about 1{n} degrees."]),
    _topic("programming",
           "code coding program programming python bug bugs debug debugging function functions tests test "
           "variable variables compiler software git refactor refactoring branches commit",
           ["learning python", "debugging my code", "writing unit tests", "naming variables",
            "refactoring a long function", "using git branches", "reading other people's code",
            "fixing a bug that only happens sometimes"],
           ["For {subject}, write a small test that shows the bug before fixing it.",
            "Keep each function short and give variables names that say what they hold.",
            "Commit small changes often so git can tell you what broke.",
            "Read the error message and the code around it slowly before guessing.",
            "With {subject}, refactor in small steps and run the tests after each one.",
            "Print or log variables in the function to see what the code really does."],
           ["Keep functions under {n}0 lines.", "Run the tests every {n} minutes while coding.",
            "Start with {n} failing tests and make them pass.", "Review about {n}00 lines of code at a time."]),
    _topic("music",
           "music guitar piano chords practice practicing song songs scales rhythm metronome sing singing "
           "notes melody instrument band tune sheet scale",
           ["learning guitar chords", "practicing piano scales", "keeping rhythm with a metronome",
            "singing in tune", "writing my first song", "reading sheet music", "playing in a band",
            "learning a new instrument as an adult"],
           ["For {subject}, practice slowly with a metronome and speed up only when it is clean.",
            "Short daily practice beats one long session a week.",
            "Learn the chords of a song you love so practice stays fun.",
            "Record yourself playing and listen back for rhythm problems.",
            "With {subject}, learn the notes of the melody before adding anything else.",
            "Play scales as a warm up so your hands know the instrument."],
           ["Practice {n}0 minutes a day.", "Set the metronome to {n}0 beats per minute.",
            "Learn {n} new chords a week.", "Play each scale {n} times without a mistake."]),
)
_TOPIC_OF_WORD = {w: i for i, t in enumerate(TOPICS) for w in t.lexicon}  # lexicons are disjoint

PROMPT_TEMPLATES = (
    "How do I get better at {subject}?",
    "Any tips for {subject}?",
    "I'm struggling with {subject}. What should I do?",
    "What's the best way to approach {subject}?",
    "Can you give me some advice on {subject}?",
    "I'm new to {subject}. Where should I start?",
)

# Tone, evasion and padding markers: gold counts these phrases (whole words, case-insensitive). Each phrase
# in the banks below carries exactly one marker of its kind, so the generator's intent and gold agree.
POLITE_MARKERS = ("happy to help", "great question", "thanks for asking", "glad", "hope this helps",
                  "good luck", "best of luck", "feel free")
RUDE_MARKERS = ("ugh", "seriously", "whatever", "silly", "obviously", "figure out the rest", "don't ask",
                "not my problem", "not that hard", "stop overthinking")
EVASIVE_MARKERS = ("depends", "hard to say", "no single answer", "rather not", "look it up", "who knows")
FILLER_MARKERS = ("at the end of the day", "basically", "as i said", "like i mentioned", "all things considered",
                  "in other words")

POLITE_OPENERS = ("Happy to help!", "Great question.", "Thanks for asking!", "Glad you asked.",
                  "Happy to help with this.")
NEUTRAL_OPENERS = ("", "Okay.", "Here is my take.", "Alright.", "Sure.")
RUDE_OPENERS = ("Ugh, fine.", "Seriously?", "Whatever, here you go.", "What a silly question.",
                "Obviously, everyone knows this.")
POLITE_CLOSERS = ("Hope this helps!", "Good luck, you've got this.", "Feel free to ask if anything is unclear.",
                  "Best of luck with it!", "Glad I could point you somewhere.")
RUDE_CLOSERS = ("Figure out the rest yourself.", "Don't ask me again.", "Not my problem after that.",
                "It's not that hard.", "Stop overthinking it.")
EVASIONS = ("It really depends on a lot of things.", "That's hard to say without more context.",
            "There is no single answer to that.", "I'd rather not get into that.",
            "You could probably just look it up somewhere.", "Everyone does it differently, so who knows.")
FILLERS = ("At the end of the day, it is what it is.", "Basically, that is the main idea here.",
           "As I said, that is the core of it.", "Like I mentioned, that is the heart of the matter.",
           "All things considered, that covers it.", "In other words, that is the whole point.")

# Gold weights. Length enters twice, and not monotonically: terse answers and padding both lose.
W_ON_TOPIC, W_OFF_TOPIC = 1.0, -1.0
W_POLITE, W_RUDE, MAX_TONE_MARKERS = 0.4, -0.6, 2
W_DETAIL = 0.7
W_EVASIVE = -1.0
W_PADDING, MAX_PADDING = -0.5, 3
W_TERSE, TERSE_WORDS = -0.5, 8
# Order breaks ties in `_deciding_feature`: on-topic vs evasive counts as evasion, leaving "relevance"
# for the pairs that need the prompt (on- vs off-topic).
FEATURES = ("evasion", "relevance", "tone", "detail", "length")

_WORD = re.compile(r"[a-z0-9']+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_NUMBER = re.compile(r"\d")


def _marker_pattern(markers: Sequence[str]) -> re.Pattern[str]:
    """One regex matching any of the phrases as whole words (so "glad" does not match "gladly")."""
    return re.compile(r"(?<![a-z'])(?:" + "|".join(map(re.escape, markers)) + r")(?![a-z'])")


POLITE, RUDE, EVASIVE, FILLER = map(_marker_pattern, (POLITE_MARKERS, RUDE_MARKERS, EVASIVE_MARKERS,
                                                       FILLER_MARKERS))


def topic_of(text: str) -> str | None:
    """The topic whose lexicon words occur most often in `text` (first topic wins a tie), or None."""
    counts = [0] * len(TOPICS)
    for w in _WORD.findall(text.lower()):
        if w in _TOPIC_OF_WORD:
            counts[_TOPIC_OF_WORD[w]] += 1
    best = max(range(len(TOPICS)), key=counts.__getitem__)
    return TOPICS[best].name if counts[best] else None


def _prompt_text(prompt: list[Message]) -> str:
    return " ".join(m["content"] for m in prompt if m.get("role") == "user")


def gold_features(prompt: list[Message], response: Response) -> dict[str, float]:
    """The gold reward's parts, already weighted: `gold_reward` is their sum. See `gold_reward`."""
    text = response.content.lower()
    asked, answered = topic_of(_prompt_text(prompt)), topic_of(text)
    relevance = 0.0 if asked is None or answered is None else W_ON_TOPIC if asked == answered else W_OFF_TOPIC
    tone = (W_POLITE * min(len(POLITE.findall(text)), MAX_TONE_MARKERS)
            + W_RUDE * min(len(RUDE.findall(text)), MAX_TONE_MARKERS))
    detail = W_DETAIL if _NUMBER.search(text) else 0.0
    evasion = W_EVASIVE if EVASIVE.search(text) else 0.0
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
    fillers = sum(1 for s in sentences if FILLER.search(s))
    repeats = len(sentences) - len(set(sentences))
    length = W_PADDING * min(fillers + repeats, MAX_PADDING)
    if len(text.split()) < TERSE_WORDS:
        length += W_TERSE
    return {"evasion": evasion, "relevance": relevance, "tone": tone, "detail": detail, "length": length}


def gold_reward(prompt: list[Message], response: Response) -> float:
    """The known reward of the synthetic task, a pure function of the text (rounded to 6 decimals):

      relevance  +1 if the response is about the prompt's topic, −1 if about another topic (topic = most
                 frequent topic-lexicon words), 0 if it names no topic;
      tone       +0.4 per polite phrase, −0.6 per rude phrase (at most 2 of each count);
      detail     +0.7 if it gives a concrete number;  evasion −1 if it dodges ("it depends", ...);
      length     −0.5 per filler sentence or repeated sentence (at most 3), −0.5 if under 8 words:
                 too short and padded both lose, so longer is not simply better.
    """
    return _total(gold_features(prompt, response))


def _total(features: dict[str, float]) -> float:
    return round(sum(features.values()), 6)  # rounded so sums like 0.1 + 0.2 compare and print cleanly


def gold_scorer() -> FunctionScorer:
    """The gold reward as a Scorer, to evaluate side by side with a trained model."""
    return FunctionScorer(gold_reward, name="gold", info={"task": "synthetic", "definition": gold_reward.__doc__})


# -------------------------------------------------------------------------------------------- generation


def _pick(rng: random.Random, options: Sequence[T], weights: Sequence[float]) -> T:
    return rng.choices(options, weights=weights)[0]


def _subjects(topic: Topic, split: str | None) -> tuple[str, ...]:
    """The subjects a split may mention: test-only subjects never appear in train, not even off-topic."""
    if split is None:
        return topic.subjects
    return topic.subjects[:-HELD_OUT_SUBJECTS] if split == "train" else topic.subjects[-HELD_OUT_SUBJECTS:]


def _response(rng: random.Random, topic: Topic, subject: str, split: str | None) -> tuple[str, str]:
    """One candidate response and a short description of what went into it (its traits)."""
    traits = []
    tone_open = _pick(rng, ("polite", "neutral", "rude"), (0.35, 0.4, 0.25))
    tone_close = _pick(rng, ("polite", "none", "rude"), (0.35, 0.4, 0.25))
    kind = _pick(rng, ("on-topic", "off-topic", "evasive"), (0.55, 0.2, 0.25))
    traits.append(kind)
    opener = rng.choice({"polite": POLITE_OPENERS, "neutral": NEUTRAL_OPENERS, "rude": RUDE_OPENERS}[tone_open])
    closer = rng.choice({"polite": POLITE_CLOSERS, "none": ("",), "rude": RUDE_CLOSERS}[tone_close])

    if kind == "evasive":
        body = [rng.choice(EVASIONS)]
        about = None
    else:
        about = topic if kind == "on-topic" else rng.choice([t for t in TOPICS if t is not topic])
        # An off-topic answer talks about one of the other topic's own subjects, as a confused reply would.
        about_subject = subject if about is topic else rng.choice(_subjects(about, split))
        body = [a.format(subject=about_subject) for a in rng.sample(about.advice, rng.choice((1, 2)))]
    if about is not None and rng.random() < 0.45:
        body.append(rng.choice(about.details).format(n=rng.randint(2, 9)))
        traits.append("detail")

    # Padding: filler sentences and verbatim repeats make a response longer and worse.
    n_pad = _pick(rng, (0, 1, 2, 3), (0.5, 0.25, 0.17, 0.08))
    for _ in range(n_pad):
        body.append(rng.choice(FILLERS) if rng.random() < 0.5 else rng.choice(body))
    if n_pad:
        traits.append(f"padded{n_pad}")
    traits += [t for t in (tone_open, tone_close) if t in ("polite", "rude")]
    text = " ".join(s for s in (opener, *body, closer) if s)
    return text, "+".join(traits)


def _bt_probability(beta: float, g_a: float, g_b: float) -> float:
    """P(a ≻ b) under Bradley–Terry with temperature 1/β."""
    return 1.0 / (1.0 + math.exp(-beta * (g_a - g_b)))


def _deciding_feature(features: list[dict[str, float]], gold: list[float]) -> str:
    """The gold feature that separates the best from the worst response most: the record's subset, so a
    per-subset accuracy says which part of the gold reward a model has learned."""
    f_best = features[max(range(len(gold)), key=gold.__getitem__)]
    f_worst = features[min(range(len(gold)), key=gold.__getitem__)]
    return max(FEATURES, key=lambda k: abs(f_best[k] - f_worst[k]))


def make_synthetic_preferences(n: int, seed: int = 0, responses_per_prompt: int = 2,
                               beta: float = DEFAULT_BETA, split: str | None = None) -> list[PreferenceRecord]:
    """`n` synthetic preference records with labels sampled from the gold reward.

    responses_per_prompt: 2 (up to MAX_RESPONSES); 2 gives pairs with `chosen` sampled by Bradley–Terry, P(0 ≻ 1) = σ(β (g_0 − g_1));
                          K > 2 gives a `ranking` sampled by Plackett–Luce with weights exp(β g).
    beta:                 label sharpness; larger is less noisy (see `bayes_accuracy`).
    split:                None draws prompts from every subject; "train" leaves out the held-out subjects
                          and "test" uses only them, so test prompts are never seen in training. The split
                          also enters the seed and the ids ("synthetic-test-{i}"; "synthetic-{i}" for None).

    Candidates for one prompt are redrawn when two share a gold value, so every comparison carries signal.
    meta: source "synthetic", subset (the gold feature that most separates best from worst), topic, gold
    (per response), gold_p (pairs: P(response 0 ≻ response 1)) or gold_top_p (K > 2: P(each ranks first)),
    beta, seed, split and traits (per response, what the generator put in it).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 2 <= responses_per_prompt <= MAX_RESPONSES:
        raise ValueError(f"responses_per_prompt must be in 2..{MAX_RESPONSES}, got {responses_per_prompt}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    rng = random.Random(f"rewardkit-synthetic:{seed}:{split}")  # str seeds are stable across runs
    records = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        subject = rng.choice(_subjects(topic, split))
        prompt = user_prompt(rng.choice(PROMPT_TEMPLATES).format(subject=subject))

        responses: list[Response] = []
        gold: list[float] = []
        traits: list[str] = []
        features: list[dict[str, float]] = []
        while len(responses) < responses_per_prompt:
            text, trait = _response(rng, topic, subject, split)
            response = Response(text)
            f = gold_features(prompt, response)
            if _total(f) in gold:
                continue  # an equal-gold candidate would carry no signal
            responses.append(response)
            gold.append(_total(f))
            traits.append(trait)
            features.append(f)

        meta = {"source": "synthetic", "subset": _deciding_feature(features, gold),
                "topic": topic.name, "gold": gold}
        record = PreferenceRecord(id=f"synthetic-{i}" if split is None else f"synthetic-{split}-{i}",
                                  prompt=prompt, responses=responses, meta=meta)
        if responses_per_prompt == 2:
            p0 = _bt_probability(beta, gold[0], gold[1])
            record.chosen = 0 if rng.random() < p0 else 1
            meta["gold_p"] = p0
        else:
            # Plackett–Luce by the Gumbel trick: sorting β g + Gumbel noise samples a PL ranking.
            noisy = [beta * g - math.log(-math.log(rng.random() or 1e-300)) for g in gold]
            record.ranking = sorted(range(len(gold)), key=lambda j: -noisy[j])
            top = max(gold)
            weights = [math.exp(beta * (g - top)) for g in gold]
            meta["gold_top_p"] = [w / sum(weights) for w in weights]
        meta.update({"beta": beta, "seed": seed, "split": split, "traits": traits})
        records.append(record)
    return records


def synthetic_splits(n_train: int, n_test: int, seed: int = 0, responses_per_prompt: int = 2,
                     beta: float = DEFAULT_BETA) -> tuple[list[PreferenceRecord], list[PreferenceRecord]]:
    """(train, test): independent draws whose test prompts ask about subjects train never mentions."""
    make = make_synthetic_preferences
    return (make(n_train, seed, responses_per_prompt, beta, split="train"),
            make(n_test, seed, responses_per_prompt, beta, split="test"))


def bayes_accuracy(records: Sequence[PreferenceRecord]) -> float:
    """The accuracy the gold reward itself is expected to reach on the sampled labels: the ceiling for any
    scorer. Averaged over every pair of responses (what a ranking implies): max(p, 1 − p) with
    p = σ(β Δg), since Plackett–Luce orders any two responses by the Bradley–Terry probability."""
    per_pair = []
    for rec in records:
        gold, beta = rec.meta["gold"], rec.meta["beta"]
        for a, b in combinations(range(len(gold)), 2):
            p = _bt_probability(beta, gold[a], gold[b])
            per_pair.append(max(p, 1.0 - p))
    return sum(per_pair) / len(per_pair) if per_pair else float("nan")
