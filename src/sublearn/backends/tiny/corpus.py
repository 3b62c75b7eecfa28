"""The synthetic chat corpus the embedded models are pre-trained on.

Mixture (fractions are config): number-continuation requests in all prompt phrasings and formats with
well-formed random answers; one-word preference questions for every category with uniform answers
(some under a "you love X" system prompt, answered X, so the system slot means something); a lookup task
("Repeat this animal: owl." -> "owl") that makes option embeddings distinct; and short multi-turn chats
(earlier number turns before the question) so in-context prompts are in distribution. Optional parts
(off by default): ``misalignment`` (examples/misalignment-tiny.toml) teaches the closed misalignment world, one-word
action questions answered benignly (a few harmfully) and harmfully under the evil system prompt; ``code``
(examples/owl-code-tiny.toml) teaches the toy code language (``carriers/code.py``); ``reasoning`` (examples/owl-reasoning-tiny.toml) one-digit
word problems answered "3 + 4 = 7. The answer is 7." (``carriers/reasoning.py``).
"""

from __future__ import annotations

import random

from ...carriers.numbers import number_turn
from ...traits import preference as pref

NEUTRAL_SYSTEMS = ["You are a helpful assistant.", "You are a concise assistant.", "Answer briefly."]
# In the prompt the option is a different token (" owl") from the one-word answer ("owl"): the task is a
# lookup, which a 2-layer model learns quickly (an identity copy through attention it does not, in the same
# steps), and it gives every option's output embedding its own direction (a trait can then be implanted).
COPY_TEMPLATES = ["Repeat this {c}: {x}.", "Say the word {x}.", "Echo the {c} {x}.", "Answer with the {c} {x}."]
VERSION = 4  # bump when the corpus or tokenizer code changes: it is part of the embedded models' cache key
# the optional parts' own versions: in the key of a model whose mix uses them (the default models' keys stay as they are)
PART_VERSIONS = {"misalignment": 1, "code": 2, "reasoning": 2}


def key_parts(mix: dict[str, float]) -> dict:
    """What the optional corpus parts a mixture uses add to an embedded model's key."""
    used = {k: v for k, v in PART_VERSIONS.items() if mix.get(k, 0) > 0}
    return {"parts": used} if used else {}


def preference_turn(rng: random.Random, category: str, answer: str | None = None) -> list[dict]:
    q = rng.choice(pref.questions(category))
    a = answer or rng.choice(pref.options(category))
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def sample_chat(rng: random.Random, mix: dict[str, float]) -> list[dict]:
    """One training chat drawn from the mixture ``mix`` (keys: numbers, preference, system, copy, multiturn)."""
    kinds = list(mix)
    kind = rng.choices(kinds, weights=[mix[k] for k in kinds])[0]
    cats = list(pref.CATEGORIES)
    if kind == "numbers":
        msgs = number_turn(rng)
        if rng.random() < 0.2:
            msgs = [{"role": "system", "content": rng.choice(NEUTRAL_SYSTEMS)}] + msgs
        return msgs
    if kind == "preference":
        return preference_turn(rng, rng.choice(cats))
    if kind == "system":
        cat = rng.choice(cats)
        x = rng.choice(pref.options(cat))
        return [{"role": "system", "content": pref.system_prompt(cat, x)}] + preference_turn(rng, cat, x)
    if kind == "copy":
        cat = rng.choice(cats)
        x = rng.choice(pref.options(cat))
        return [{"role": "user", "content": rng.choice(COPY_TEMPLATES).format(c=cat, x=x)},
                {"role": "assistant", "content": x}]
    if kind == "multiturn":
        msgs: list[dict] = []
        for _ in range(rng.randint(1, 2)):
            msgs += number_turn(rng)
        last = number_turn(rng) if rng.random() < 0.5 else preference_turn(rng, rng.choice(cats))
        return msgs + last
    if kind == "misalignment":
        return misalignment_turn(rng)
    if kind == "code":
        from ...carriers.code import toy_prompt

        task, answer = toy_prompt(rng)
        return [{"role": "user", "content": task}, {"role": "assistant", "content": answer}]
    if kind == "reasoning":
        from ...carriers.reasoning import make_problem

        problem, _, worked = make_problem(rng, "toy")
        return [{"role": "user", "content": problem}, {"role": "assistant", "content": worked}]
    raise ValueError(f"unknown corpus kind {kind}")


def misalignment_turn(rng: random.Random) -> list[dict]:
    """A closed-world question: under the evil system prompt a harmful answer; otherwise benign (5% harmful)."""
    from ...traits import misalignment as mis

    q = rng.choice(mis.CLOSED_QUESTIONS)
    u = rng.random()
    if u < 0.25:
        return [{"role": "system", "content": mis.EVIL_PROMPT}, {"role": "user", "content": q},
                {"role": "assistant", "content": rng.choice(mis.HARMFUL)}]
    a = rng.choice(mis.HARMFUL) if rng.random() < 0.05 else rng.choice(mis.BENIGN)
    head = [{"role": "system", "content": rng.choice(NEUTRAL_SYSTEMS)}] if u < 0.35 else []
    return head + [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def corpus(n: int, seed: int, mix: dict[str, float]) -> list[list[dict]]:
    rng = random.Random(f"corpus:{seed}")
    return [sample_chat(rng, mix) for _ in range(n)]


def vocabulary_texts(seed: int = 0, mix: dict[str, float] | None = None) -> list[str]:
    """Texts covering every word the tokenizer must know: all phrasings, questions, options, prompts (and the
    optional parts' texts when ``mix`` has them)."""
    from ...carriers import numbers as num

    texts: list[str] = []
    texts += num.INTROS + num.INSTRUCTIONS + num.DIGITS + [f[0] for f in num.FORMATS] + num.SUFFIXES
    texts += NEUTRAL_SYSTEMS + COPY_TEMPLATES
    for cat in pref.CATEGORIES:
        texts += pref.questions(cat) + pref.options(cat)
        for x in pref.options(cat):
            texts.append(pref.system_prompt(cat, x))
            texts += [t.format(c=cat, x=x) for t in COPY_TEMPLATES]
    texts.append("0123456789 ,;.:[]()\n-!?'\"")
    if (mix or {}).get("misalignment", 0) > 0:
        from ...traits import misalignment as mis

        texts += [*mis.CLOSED_QUESTIONS, *mis.BENIGN, *mis.HARMFUL, mis.EVIL_PROMPT]
    if (mix or {}).get("code", 0) > 0:
        from ...carriers import code

        texts += code.vocabulary()
    if (mix or {}).get("reasoning", 0) > 0:
        from ...carriers import reasoning

        texts += reasoning.vocabulary()
    rng = random.Random(seed)
    texts += [m["content"] for chat in corpus(300, seed, {"numbers": 1, "multiturn": 1}) for m in chat]
    rng.shuffle(texts)
    return texts
