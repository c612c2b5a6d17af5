"""A story's cast (the hero, a friend, a grown-up, a helping animal) and the `Teller` that fills its
templates: each character's slots (`{hero}`, `{he}`, `{pal_his}`...), dialogue in the speaker's own voice,
capitals. The `cast_*` builders pick each plot's supporting roles and its plot-specific slots."""

from __future__ import annotations

import random
import re

from delphi.data.words import (
    BOY_NAMES,
    FIRST_PERSON,
    FIX_BY_DAMAGE,
    GIFTS,
    GIRL_NAMES,
    GROWN_UP_REACHES,
    HERO_ADJECTIVES,
    HERO_ANIMALS,
    PAIR_KINDS,
    PET_NAMES,
    PRONOUNS,
    REACHERS,
    THINGS,
    Character,
    Reacher,
)


def with_article(phrase: str) -> str:
    """`a ball`, `an orange ball`: the indefinite article that fits the first word."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _child_name(rng: random.Random, gender: str, taken: set[str]) -> str:
    name = rng.choice([n for n in (GIRL_NAMES if gender == "she" else BOY_NAMES) if n not in taken])
    taken.add(name)
    return name


def make_hero(rng: random.Random, taken: set[str], allow_pair: bool = True) -> Character:
    """The main character: a child, an animal with a name, or (sometimes) a pair speaking as `we`."""
    roll = rng.random()
    if allow_pair and roll < 0.15:
        first = _child_name(rng, rng.choice(("he", "she")), taken)
        second = _child_name(rng, rng.choice(("he", "she")), taken)
        ref = f"{first} and {second}"
        return Character(f"{rng.choice(PAIR_KINDS)} named {ref}", ref, ref, PRONOUNS["they"], "two")
    gender = rng.choice(("he", "she"))
    adjective = rng.choice(HERO_ADJECTIVES)
    if roll < 0.65:
        name = _child_name(rng, gender, taken)
        kind = "girl" if gender == "she" else "boy"
    else:
        name = rng.choice([n for n in PET_NAMES[gender] if n not in taken])
        taken.add(name)
        kind = rng.choice(HERO_ANIMALS)
    return Character(f"{with_article(adjective)} {kind} named {name}", name, name, PRONOUNS[gender], "one")


def make_friend(rng: random.Random, hero: Character, taken: set[str], stranger: bool = False) -> Character:
    """A child of the hero's age: a playmate, a rival for a toy, or (`stranger`) a new kid in town."""
    gender = rng.choice(("he", "she"))
    name = _child_name(rng, gender, taken)
    as_stranger = f"a {'girl' if gender == 'she' else 'boy'} named {name}"
    intro = as_stranger if stranger else rng.choice((f"{hero.pronouns.his} friend {name}", as_stranger))
    return Character(intro, name, name, PRONOUNS[gender], "one")


def make_grown_up(
    rng: random.Random, hero: Character, kinds: tuple[str, ...] = ("mom", "dad", "grandma", "grandpa")
):
    """A family grown-up, referred to through the hero: `her mom`, `their grandpa`."""
    kind = rng.choice(kinds)
    gender = "she" if kind in ("mom", "grandma") else "he"
    ref = f"{hero.pronouns.his} {kind}"
    return Character(ref, ref, kind.capitalize(), PRONOUNS[gender], "one")


def _animal_helper(rng: random.Random, reacher: Reacher) -> Character:
    adjective = rng.choice(("kind", "friendly", "tall" if reacher.kind == "giraffe" else "clever"))
    gender = rng.choice(("he", "she"))
    return Character(
        with_article(f"{adjective} {reacher.kind}"),
        f"the {reacher.kind}",
        f"{adjective} {reacher.kind}",
        PRONOUNS[gender],
        "one",
    )


def _cast_slots(roles: dict[str, Character]) -> dict[str, str]:
    """Template slots per role: `{hero}`, `{hero_intro}`, `{he}`, `{his}`...; `{pal}`, `{pal_he}`..."""
    slots = {}
    for role, who in roles.items():
        prefix = "" if role == "hero" else f"{role}_"
        slots[role] = who.ref
        slots[f"{role}_intro"] = who.intro
        slots[f"{prefix}call"] = who.call
        slots.update({prefix + field: value for field, value in who.pronouns._asdict().items()})
    return slots


_SENTENCE_START = re.compile(r"([.!?] )([a-z])")


def _capitalize(text: str) -> str:
    """Capital letter at the start and after every sentence end inside `text` (no quotes inside)."""
    text = text[0].upper() + text[1:]
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)


class Teller:
    """Fills one story's templates: its cast's slots, dialogue in each speaker's own voice, capitals."""

    def __init__(self, rng: random.Random, roles: dict[str, Character], extra: dict[str, object]):
        self.rng = rng
        self.roles = roles
        self.slots = {**_cast_slots(roles), **extra}

    def line(self, *templates: str) -> str:
        """One narrative sentence (or two), chosen from `templates`."""
        return _capitalize(self.rng.choice(templates).format_map(self.slots))

    def say(self, role: str, *lines: str, verb: str | None = None) -> str:
        """A quoted line by `role`, its first person (`{I}`, `{my}`, `{am}`) in the speaker's own voice."""
        voice = FIRST_PERSON[self.roles[role].person]
        text = _capitalize(self.rng.choice(lines).format_map({**self.slots, **voice}))
        if verb is None:
            verb = {"?": "asked", "!": self.rng.choice(("said", "cried"))}.get(text[-1], "said")
        speaker = self.slots[role]
        form = self.rng.randrange(3)
        if form == 0:
            return _capitalize(f'{speaker} {verb}, "{text}"')
        if text.endswith("."):
            text = text[:-1] + ","
        return f'"{text}" {verb} {speaker}.' if form == 1 else f'"{text}" {speaker} {verb}.'


def cast_lost(rng, hero, taken):
    pal = make_friend(rng, hero, taken) if rng.random() < 0.5 else make_grown_up(rng, hero)
    thing = rng.choice([x for x in THINGS if x.can_lose])
    return {"pal": pal}, {"thing": thing}


def cast_stuck(rng, hero, taken):
    thing = rng.choice([x for x in THINGS if x.can_stick])
    if rng.random() < 0.5:
        reacher = rng.choice(REACHERS)
        return {"pal": _animal_helper(rng, reacher)}, {"thing": thing, "reach": reacher.method}
    pal = make_grown_up(rng, hero, ("mom", "dad", "grandpa"))
    return {"pal": pal}, {"thing": thing, "reach": rng.choice(GROWN_UP_REACHES)}


def cast_broken(rng, hero, taken):
    thing = rng.choice([x for x in THINGS if x.damage])
    return {"pal": make_grown_up(rng, hero)}, {"thing": thing, "fixes": FIX_BY_DAMAGE[thing.damage]}


def cast_share(rng, hero, taken):
    return {"pal": make_friend(rng, hero, taken), "grown": make_grown_up(rng, hero)}, {}


def cast_friend(rng, hero, taken):
    return {"pal": make_friend(rng, hero, taken, stranger=True)}, {}


def cast_grown(rng, hero, taken):
    return {"grown": make_grown_up(rng, hero)}, {}


def cast_gift(rng, hero, taken):
    grown = make_grown_up(rng, hero)
    if rng.random() < 0.5:
        pal = make_friend(rng, hero, taken)
    else:
        pal = make_grown_up(
            rng, hero, tuple(k for k in ("mom", "dad", "grandma", "grandpa") if k != grown.call.lower())
        )
    return {"pal": pal, "grown": grown}, {"gift": rng.choice(GIFTS)}
