"""The embedded offline corpus: short, simple English stories made by a deterministic generator.

`make demo` has to run the whole pipeline (tokenizer -> token sequences -> a tiny LM) on a fresh
machine with no network and no TinyStories download. So delphi carries its own corpus, generated
rather than stored: a template grammar of small plots (setup, a problem, help, a resolution and a
lesson) filled from word lists, with agreement handled (a/an, he/she/they/it, was/were, past tense)
and dialogue in quotes. The grammar is consistent enough that a small LM learns it (its loss falls
far below the unigram entropy) and the slot fills combine into enough variety that it cannot simply
memorize the stories. Text and code are delphi's own (Apache-2.0); nothing is copied from TinyStories.

Same seed and sizes give byte-identical stories and parquet files; train and validation come from
independent random streams derived from the seed.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from delphi import __version__, atomic
from delphi.errors import DelphiError

log = logging.getLogger("delphi.data.stories")

SPLITS = ("train", "validation")
FEATURE = "story"

# ----------------------------------------------------------------------------------------------
# Word lists: the data the templates are filled from.
# ----------------------------------------------------------------------------------------------

GIRL_NAMES = ("Lily", "Mia", "Sue", "Anna", "Lucy", "Emma", "Sara", "Zoe", "Nora", "Amy")
BOY_NAMES = ("Tom", "Ben", "Sam", "Jack", "Leo", "Tim", "Finn", "Noah", "Omar", "Eli")
PET_NAMES = {"he": ("Max", "Pip", "Toby", "Buddy"), "she": ("Bella", "Coco", "Daisy", "Rosie")}
HERO_ANIMALS = ("bunny", "puppy", "kitten", "bear", "duck", "mouse", "fox", "frog", "pig", "elephant", "owl")
HERO_ADJECTIVES = ("little", "small", "happy", "kind", "curious", "brave", "shy", "young", "playful")
PAIR_KINDS = ("two friends", "twins", "two best friends")

COLORS = ("red", "blue", "green", "yellow", "pink", "purple", "orange")


class Place(NamedTuple):
    name: str
    at: str  # where something happens
    to: str  # where someone goes


PLACES = (
    Place("park", "at the park", "to the park"),
    Place("beach", "at the beach", "to the beach"),
    Place("garden", "in the garden", "to the garden"),
    Place("forest", "in the forest", "into the forest"),
    Place("farm", "on the farm", "to the farm"),
    Place("lake", "by the lake", "to the lake"),
    Place("playground", "at the playground", "to the playground"),
    Place("meadow", "in the meadow", "to the meadow"),
    Place("pond", "by the pond", "to the pond"),
    Place("hill", "on the big hill", "up the big hill"),
    Place("river", "by the river", "down to the river"),
)


class Thing(NamedTuple):
    noun: str
    adjectives: tuple[str, ...]
    can_lose: bool
    can_stick: bool  # light or thrown: can end up stuck somewhere high
    damage: str | None  # how it breaks ("broke", "tore", "ripped"), None if it does not


THINGS = (
    Thing("ball", (*COLORS, "big"), True, True, None),
    Thing("kite", (*COLORS, "new"), False, True, "tore"),
    Thing("teddy bear", ("soft", "old", "little"), True, False, "ripped"),
    Thing("doll", ("old", "little", "new"), True, False, "broke"),
    Thing("toy car", (*COLORS, "fast"), True, False, "broke"),
    Thing("toy boat", (*COLORS, "little"), True, False, "broke"),
    Thing("hat", (*COLORS, "funny", "new"), True, True, "ripped"),
    Thing("balloon", COLORS, False, True, None),
    Thing("book", ("new", "big", "old"), True, False, "tore"),
    Thing("blanket", ("soft", "warm", "blue"), True, False, "ripped"),
    Thing("robot", ("shiny", "little"), True, False, "broke"),
    Thing("frisbee", COLORS, True, True, None),
    Thing("scarf", (*COLORS, "warm"), True, True, "ripped"),
    Thing("toy train", (*COLORS, "little"), True, False, "broke"),
    Thing("shell", ("pink", "little", "big"), True, False, None),
    Thing("bucket", COLORS, True, False, "broke"),
)
FIX_BY_DAMAGE = {
    "broke": ("put some glue on the pieces and held them together", "glued the pieces back together"),
    "tore": ("put some tape on the tear", "fixed the tear with tape"),
    "ripped": (
        "got a needle and thread and sewed up the hole",
        "sewed up the hole with a needle and thread",
    ),
}

ACTIVITIES = (  # (base, past)
    ("play outside", "played outside"),
    ("draw pictures", "drew pictures"),
    ("sing songs", "sang songs"),
    ("run and jump", "ran and jumped"),
    ("read books", "read books"),
    ("splash in puddles", "splashed in puddles"),
    ("pick flowers", "picked flowers"),
    ("climb trees", "climbed trees"),
    ("look at the stars", "looked at the stars"),
    ("play hide and seek", "played hide and seek"),
    ("jump rope", "jumped rope"),
)
DAYS = ("One sunny day", "One warm morning", "One cold day", "One bright morning", "One windy day", "One day")
SEARCH_SPOTS = ("under the bench", "behind the tree", "in the bushes", "near the gate", "under the slide")
FOUND_SPOTS = (
    "under a big leaf",
    "in the tall grass",
    "next to a tree",
    "inside a bush",
    "near the pond",
    "in a little hole",
)
HIGH_SPOTS = ("in a tall tree", "on the roof", "on top of a high fence", "on a high branch")
HAPPY_WORDS = ("happy", "glad", "excited", "proud")
SAD_WORDS = ("sad", "upset", "worried")


class Pronouns(NamedTuple):
    he: str
    him: str
    his: str
    himself: str
    was: str


PRONOUNS = {
    "he": Pronouns("he", "him", "his", "himself", "was"),
    "she": Pronouns("she", "her", "her", "herself", "was"),
    "they": Pronouns("they", "them", "their", "themselves", "were"),
    "it": Pronouns("it", "it", "its", "itself", "was"),
}
# how a speaker refers to themselves in dialogue: one person, or a pair speaking together
FIRST_PERSON = {
    "one": {"I": "I", "me": "me", "my": "my", "am": "am", "Im": "I'm", "myself": "myself"},
    "two": {"I": "we", "me": "us", "my": "our", "am": "are", "Im": "we're", "myself": "ourselves"},
}


class Character(NamedTuple):
    intro: str  # first mention: "a little girl named Lily"
    ref: str  # later mentions: "Lily", "her mom", "the bird"
    call: str  # how others address them: "Lily", "Mom", "kind bird"
    pronouns: Pronouns
    person: str  # "one" or "two" (a pair speaking as "we")


# ----------------------------------------------------------------------------------------------
# The cast
# ----------------------------------------------------------------------------------------------


def _a(phrase: str) -> str:
    """`a ball`, `an orange ball`: the indefinite article that fits the first word."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _child_name(rng: random.Random, gender: str, taken: set[str]) -> str:
    name = rng.choice([n for n in (GIRL_NAMES if gender == "she" else BOY_NAMES) if n not in taken])
    taken.add(name)
    return name


def _hero(rng: random.Random, taken: set[str], allow_pair: bool = True) -> Character:
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
    return Character(f"{_a(adjective)} {kind} named {name}", name, name, PRONOUNS[gender], "one")


def _friend(rng: random.Random, hero: Character, taken: set[str], stranger: bool = False) -> Character:
    """A child of the hero's age: a playmate, a rival for a toy, or (`stranger`) a new kid in town."""
    gender = rng.choice(("he", "she"))
    name = _child_name(rng, gender, taken)
    as_stranger = f"a {'girl' if gender == 'she' else 'boy'} named {name}"
    intro = as_stranger if stranger else rng.choice((f"{hero.pronouns.his} friend {name}", as_stranger))
    return Character(intro, name, name, PRONOUNS[gender], "one")


def _grown_up(
    rng: random.Random, hero: Character, kinds: tuple[str, ...] = ("mom", "dad", "grandma", "grandpa")
):
    """A family grown-up, referred to through the hero: `her mom`, `their grandpa`."""
    kind = rng.choice(kinds)
    gender = "she" if kind in ("mom", "grandma") else "he"
    ref = f"{hero.pronouns.his} {kind}"
    return Character(ref, ref, kind.capitalize(), PRONOUNS[gender], "one")


class Reacher(NamedTuple):
    kind: str
    method: str  # how they get a thing down from up high


REACHERS = (
    Reacher("giraffe", "stretched {pal_his} long neck and took the {thing} in {pal_his} mouth"),
    Reacher("bird", "flew up and pulled the {thing} free with {pal_his} beak"),
    Reacher("monkey", "climbed up as fast as the wind and grabbed the {thing}"),
)
GROWN_UP_REACHES = (
    "got a tall ladder, climbed up and got the {thing}",
    "found a long stick and poked the {thing} until it fell down",
    "lifted {him} up high, and {he} grabbed the {thing}",
)


def _animal_helper(rng: random.Random, reacher: Reacher) -> Character:
    adjective = rng.choice(("kind", "friendly", "tall" if reacher.kind == "giraffe" else "clever"))
    gender = rng.choice(("he", "she"))
    return Character(
        _a(f"{adjective} {reacher.kind}"),
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


# ----------------------------------------------------------------------------------------------
# Filling templates
# ----------------------------------------------------------------------------------------------

_SENTENCE_START = re.compile(r"([.!?] )([a-z])")


def _capitalize(text: str) -> str:
    """Capital letter at the start and after every sentence end inside `text` (no quotes inside)."""
    text = text[0].upper() + text[1:]
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)


class _Teller:
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


# ----------------------------------------------------------------------------------------------
# Plots: each returns its beats (setup, problem, help, resolution, ending), each a list of sentences.
# ----------------------------------------------------------------------------------------------

Beats = list[list[str]]


def _opening(t: _Teller) -> list[str]:
    first = t.line(
        "Once upon a time, there {was} {hero_intro}.",
        "There once {was} {hero_intro} who lived near the {place}.",
        "{hero_intro} lived in a little house by the {place}.",
        "Once there {was} {hero_intro}.",
    )
    second = t.line(
        "{he} loved to {activity} every day.",
        "More than anything, {he} loved to {activity}.",
        "{he} {was} always happy when {he} could {activity}.",
        "{his} favorite thing in the world was {his} {thing}.",
    )
    return [first, second]


def _lost_plot(t: _Teller) -> Beats:
    setup = _opening(t) + [
        t.line(
            "{day}, {hero} took {his} {adj_thing} {place_to}.",
            "{day}, {hero} went {place_to} with {his} {adj_thing}.",
        ),
        t.line(
            "{he} played with it for a long time.",
            "{he} had so much fun with it.",
            "{he} {activity_past} and laughed.",
        ),
    ]
    problem = [
        t.line(
            "But when it was time to go home, the {thing} was gone!",
            "Then {he} put the {thing} down to {activity}. When {he} came back, it was not there!",
            "After a while, {he} looked around, but the {thing} was nowhere to be seen.",
        ),
        t.line(
            "{hero} felt very {sad}.",
            "{hero} {was} so {sad} that {he} started to cry.",
            "{his} eyes filled with tears.",
        ),
        t.say("hero", "Where is {my} {thing}? {I} can't find it!", "Oh no! {I} lost {my} {thing}!"),
        t.line(
            "{he} looked {search_spot} and {search_spot2}, but it was not there.",
            "{he} looked everywhere, but {he} could not find it.",
        ),
    ]
    help_ = [
        t.line(
            "Just then, {pal_intro} came by.",
            "Then {pal_intro} saw {him}.",
            "Soon {pal_intro} walked up to {him}.",
        ),
        t.say("pal", "Why are you so sad, {call}?", "What is wrong, {call}?"),
        t.say(
            "hero",
            "{I} lost {my} {thing}. {I} looked everywhere!",
            "{my} {thing} is gone, and {I} can't find it.",
        ),
        t.say(
            "pal",
            "Don't worry. I will help you look.",
            "Let's look for it together. Two pairs of eyes are better than one.",
        ),
    ]
    resolution = [
        t.line(
            "They looked high and low {place_at}.",
            "They walked all around and looked very carefully.",
        ),
        t.line(
            "At last, {pal} found the {thing} {found_spot}!",
            "Then {pal} saw something {color} {found_spot}. It was the {thing}!",
        ),
        t.say("hero", "Thank you so much, {pal_call}!", "Yay! You found it! Thank you!", verb="shouted"),
    ]
    ending = [
        t.line(
            "{hero} hugged {his} {thing} and smiled.", "{hero} held {his} {thing} close all the way home."
        ),
        t.line(
            "From that day on, {he} always kept {his} {thing} close.",
            "{he} learned that it is good to ask for help when you need it.",
            "{he} {was} so {happy} to have such a good friend.",
        ),
    ]
    return [setup, problem, help_, resolution, ending]


def _stuck_plot(t: _Teller) -> Beats:
    setup = _opening(t) + [
        t.line(
            "{day}, {hero} went {place_to} to play with {his} {adj_thing}.",
            "{day}, {hero} {was} playing with {his} {adj_thing} {place_at}.",
        ),
    ]
    problem = [
        t.line(
            "A strong wind came and blew the {thing} away.",
            "{he} threw the {thing} up high, higher than ever before.",
        ),
        t.line("Oh no! The {thing} got stuck {high_spot}.", "It landed {high_spot} and got stuck there."),
        t.line(
            "{hero} jumped and jumped, but {he} could not reach it.",
            "{hero} tried to climb up, but it was too high.",
            "{he} stood on {his} toes and reached up, but it was no use.",
        ),
        t.say("hero", "{my} {thing} is stuck! What can {I} do?", "Come down, {thing}! Please come down!"),
    ]
    help_ = [
        t.line(
            "Just then, {pal_intro} heard {him}.",
            "{pal_intro} saw that {hero} {was} {sad}.",
            "Then {pal_intro} came over.",
        ),
        t.say("pal", "What is the matter, {call}?", "Why do you look so {sad}?"),
        t.say(
            "hero",
            "{my} {thing} is stuck {high_spot}, and {I} can't reach it.",
            "Can you help {me}, {pal_call}? {my} {thing} is stuck.",
        ),
        t.say("pal", "I can help you with that.", "Don't be {sad}. I know what to do."),
    ]
    resolution = [
        t.line("{pal} " + t.slots["reach"] + "."),
        t.line("{hero} {was} so {happy}!", "{hero} clapped and jumped for joy."),
        t.say("hero", "Thank you, {pal_call}! You saved {my} {thing}!", "Thank you so much!"),
        t.say("pal", "You are welcome. Be careful next time.", "I am glad I could help."),
    ]
    ending = [
        t.line(
            "After that, {hero} played with the {thing} far away from trees and roofs.",
            "{hero} and {pal} played together until the sun went down.",
        ),
        t.line(
            "{he} learned that friends help each other.",
            "It was a very good day after all.",
            "{he} never forgot how kind {pal} had been.",
        ),
    ]
    return [setup, problem, help_, resolution, ending]


def _broken_plot(t: _Teller) -> Beats:
    setup = _opening(t) + [
        t.line("{hero} had {adj_thing_a}.", "{hero} got {adj_thing_a} for {his} birthday."),
        t.line("{he} took it everywhere {he} went.", "{he} played with it every single day."),
    ]
    problem = [
        t.line(
            "{day}, {he} played too rough, and the {thing} {damage}.",
            "{day}, the {thing} fell on the hard floor and {damage}.",
            "{day}, a big dog grabbed the {thing} and pulled, and it {damage}.",
        ),
        t.line("{hero} {was} very {sad}.", "Big tears rolled down {his} cheeks."),
        t.say("hero", "{my} {thing} is ruined! Now {I} can't play with it.", "Oh no! {my} poor {thing}!"),
    ]
    help_ = [
        t.line("{pal_intro} heard {him} crying and came to see.", "{he} ran to show {pal}."),
        t.say("pal", "Let me see. I think I can fix it.", "Don't cry, {call}. We can fix it together."),
        t.line("{pal} " + t.rng.choice(t.slots["fixes"]) + "."),
        t.line("{hero} watched and helped as much as {he} could.", "{hero} held {his} breath and waited."),
    ]
    resolution = [
        t.line("Soon the {thing} was as good as new.", "When they were done, the {thing} looked almost new."),
        t.say(
            "hero", "You fixed it! Thank you, {pal_call}!", "It is all better! You are the best, {pal_call}!"
        ),
        t.say("pal", "You are welcome. Just be gentle with it.", "I am happy I could help."),
    ]
    ending = [
        t.line("{hero} hugged {pal}.", "{hero} smiled a big smile."),
        t.line(
            "From then on, {he} {was} always gentle with {his} {thing}.",
            "{he} learned that broken things can be fixed with a little help and love.",
        ),
    ]
    return [setup, problem, help_, resolution, ending]


def _share_plot(t: _Teller) -> Beats:
    setup = _opening(t) + [
        t.line("{day}, {hero} and {pal_intro} went {place_to}.", "{day}, {hero} met {pal_intro} {place_at}."),
        t.line("They {activity_past} together and had lots of fun.", "They were having a great time."),
    ]
    problem = [
        t.line(
            "Then they both saw {adj_thing_a} on the ground. They both wanted it!",
            "Then they found {adj_thing_a}, and they both wanted to play with it.",
        ),
        t.say("hero", "It is {my} turn! I saw it first!", "Give it to me! I want it!", verb="shouted"),
        t.say("pal", "No, it is my turn!", "No! I want to play with it!", verb="shouted"),
        t.line(
            "They pulled and pulled, and soon they were both {sad}.",
            "They started to fight, and nobody was having fun anymore.",
        ),
    ]
    help_ = [
        t.line("{grown_intro} saw them and came over.", "{grown_intro} heard the shouting and walked over."),
        t.say(
            "grown",
            "Why don't you take turns? Then you can both play.",
            "Fighting is no fun. What if you share?",
        ),
        t.line("{hero} and {pal} looked at each other.", "{hero} thought about it for a moment."),
        t.say("hero", "You can go first, {pal}.", "Okay. Let's share it."),
    ]
    resolution = [
        t.line(
            "They took turns with the {thing}, and they played together all afternoon.",
            "They shared the {thing}, and soon they were laughing again.",
        ),
        t.line("It was much more fun to play together.", "Playing together was better than playing alone."),
    ]
    ending = [
        t.line("{hero} and {pal} became best friends.", "At the end of the day, {hero} and {pal} hugged."),
        t.line("They learned that sharing makes everyone {happy}.", "{he} learned that it is good to share."),
    ]
    return [setup, problem, help_, resolution, ending]


class Fear(NamedTuple):
    setup: str
    scared: str
    comfort: str  # what the grown-up says
    brave: str  # what the hero then does
    after: str


FEARS = (
    Fear(
        "One night, {his} room was very dark, and the wind made funny sounds.",
        "{I} don't like the dark. It is too scary!",
        "The dark is just the night saying good night. Look, there are the stars.",
        "{hero} looked out the window at the stars and took a deep breath.",
        "Soon {he} fell asleep with a smile.",
    ),
    Fear(
        "One evening, a big storm came. Boom! The thunder was very loud.",
        "{I} {am} scared of the thunder!",
        "Thunder is just a big noise. It cannot hurt you. Let's count until the next boom.",
        "{hero} counted with {grown}, one, two, three, and {he} did not hide.",
        "Soon the storm went away, and the sky was clear again.",
    ),
    Fear(
        "The dog next door was very big, and it barked very loud.",
        "That dog is too big! {I} {am} scared of it!",
        "He just wants to say hello. Hold out your hand, slowly.",
        "{hero} held out {his} hand, and the big dog licked it.",
        "After that, the big dog was {his} friend, and they played every day.",
    ),
    Fear(
        "At the playground there was a very tall slide.",
        "The slide is too tall! {I} will fall!",
        "I will wait for you at the bottom. You can do it.",
        "{hero} climbed up, sat down and went down the slide. Whee!",
        "{he} went down the slide again and again.",
    ),
    Fear(
        "At the lake, the water looked deep and cold.",
        "The water is too deep! {I} don't want to go in.",
        "I will hold your hands. We will go in just a little bit.",
        "{hero} held on tight, kicked {his} feet and splashed in the water.",
        "By the end of the day, {hero} loved the water.",
    ),
)


def _fear_plot(t: _Teller) -> Beats:
    fear: Fear = t.slots["fear"]
    setup = _opening(t) + [t.line(fear.setup)]
    problem = [
        t.line("{hero} {was} very scared.", "{hero} felt scared and small.", "{hero} began to shake."),
        t.say("hero", fear.scared),
        t.line("{he} ran to {grown}.", "{he} hid behind {grown}.", "{he} called for {grown}."),
    ]
    help_ = [
        t.line("{grown} gave {him} a big hug.", "{grown} sat down next to {him}."),
        t.say("grown", "It is okay to be scared. " + fear.comfort),
        t.say("hero", "Will you stay with {me}?", "Are you sure?"),
        t.say("grown", "Yes. I am right here with you.", "I am sure. You are braver than you think."),
    ]
    resolution = [
        t.line(fear.brave),
        t.say("hero", "{I} did it! {I} {am} not scared anymore!", verb="shouted"),
    ]
    ending = [
        t.line(fear.after),
        t.line(
            "{he} felt very {proud} of {himself}.",
            "{he} learned that being brave means trying even when you are scared.",
        ),
    ]
    return [setup, problem, help_, resolution, ending]


class Critter(NamedTuple):
    intro: str  # what the hero finds
    name: str
    trouble: str
    care: str  # what the hero and the grown-up do
    after: str


CRITTERS = (
    Critter(
        "a little bird on the ground",
        "bird",
        "Its wing was hurt, and it could not fly.",
        "They put the bird in a soft box and gave it seeds and water.",
        "A few days later, the bird was strong again. It flapped its wings and flew up into the sky.",
    ),
    Critter(
        "a small duckling all alone",
        "duckling",
        "It was lost and could not find its mother.",
        "They walked along the water until they heard a loud quack. It was the mother duck!",
        "The duckling swam to its mother, and they swam away together.",
    ),
    Critter(
        "a tiny kitten in the rain",
        "kitten",
        "It was wet and cold and very hungry.",
        "They took the kitten inside and gave it some warm milk.",
        "The kitten was warm and happy. It had found a new home.",
    ),
    Critter(
        "a little turtle on its back",
        "turtle",
        "It kicked its legs, but it could not turn over.",
        "They turned the turtle over very gently and carried it to the pond.",
        "The turtle went slowly into the water. It looked back as if to say thank you.",
    ),
)


def _critter_plot(t: _Teller) -> Beats:
    critter: Critter = t.slots["critter"]
    setup = _opening(t) + [
        t.line("{day}, {hero} went {place_to}.", "{day}, {hero} {was} walking {place_at}."),
        t.line("{he} {activity_past} and sang a happy song.", "The birds were singing in the trees."),
    ]
    problem = [
        t.line("Then {he} found " + critter.intro + ".", "Suddenly {he} saw " + critter.intro + "."),
        t.line(critter.trouble),
        t.say(
            "hero",
            "Oh, poor little " + critter.name + "! {I} have to help it.",
            "Don't be scared, little " + critter.name + ". {I} will help you.",
        ),
    ]
    help_ = [
        t.line("{he} ran to get {grown}.", "{he} called {grown} to come and see."),
        t.say(
            "grown",
            "You did the right thing. Let's help it together.",
            "What a kind heart you have. Let's help it.",
        ),
        t.line(critter.care),
    ]
    resolution = [
        t.line(critter.after),
        t.say(
            "hero",
            "Goodbye, little " + critter.name + "!",
            "Be safe, little " + critter.name + "!",
            verb="called",
        ),
    ]
    ending = [
        t.line("{hero} felt warm and {happy} inside.", "{hero} smiled all day long."),
        t.line(
            "{he} learned that even small friends need help sometimes.",
            "{he} knew that being kind to animals is always right.",
        ),
    ]
    return [setup, problem, help_, resolution, ending]


def _rain_plot(t: _Teller) -> Beats:
    setup = _opening(t) + [
        t.line(
            "{day}, {hero} and {grown} wanted to have a picnic {place_at}.",
            "{day}, {hero} planned to go {place_to} with {grown}.",
        ),
        t.line(
            "{he} packed apples, bread and cookies in a basket.",
            "{he} put on {his} shoes and got {his} {thing}.",
        ),
    ]
    problem = [
        t.line(
            "But then dark clouds came, and it started to rain.",
            "Just as they were going out, big drops of rain began to fall.",
        ),
        t.say(
            "hero",
            "Now {I} can't go {place_to}! This is the worst day ever!",
            "Oh no! The rain ruined everything!",
        ),
        t.line(
            "{hero} {was} very {sad}. {he} sat by the window and watched the rain.",
            "{hero} frowned and crossed {his} arms.",
        ),
    ]
    help_ = [
        t.line("{grown} smiled.", "{grown} had an idea."),
        t.say(
            "grown",
            "We can have a picnic inside! Let's build a fort with blankets.",
            "Who says a picnic has to be outside?",
        ),
        t.line(
            "They made a big fort with blankets and pillows in the living room.",
            "They spread a blanket on the floor and sat on it like it was grass.",
        ),
    ]
    resolution = [
        t.line(
            "They ate the apples and cookies and told funny stories.",
            "They ate their food and played games while the rain fell.",
        ),
        t.say("hero", "This is the best picnic ever!", "Inside picnics are so much fun!", verb="laughed"),
    ]
    ending = [
        t.line(
            "The next day, the sun came out, and they went {place_to} after all.",
            "When the rain stopped, they saw a big rainbow in the sky.",
        ),
        t.line(
            "{hero} learned that when plans change, you can still have fun.",
            "{hero} {was} {happy}, and {he} {was} not {sad} about the rain anymore.",
        ),
    ]
    return [setup, problem, help_, resolution, ending]


class Gift(NamedTuple):
    thing: str
    make: str
    mishap: str
    fix: str


GIFTS = (
    Gift(
        "a cake",
        "mixed flour, eggs and sugar in a big bowl",
        "{he} dropped the bowl, and the mix went all over the floor",
        "helped {him} mix a new bowl and put the cake in the oven",
    ),
    Gift(
        "a card",
        "drew a big heart and colored it {color}",
        "{he} spilled water on it, and the colors ran together",
        "gave {him} new paper and helped {him} draw an even better heart",
    ),
    Gift(
        "a picture",
        "painted the house, the sun and the whole family",
        "the wind blew the picture into a puddle",
        "helped {him} paint a new picture, with a rainbow this time",
    ),
)


def _gift_plot(t: _Teller) -> Beats:
    gift: Gift = t.slots["gift"]
    setup = _opening(t) + [
        t.line("Soon it would be {pal}'s birthday.", "{pal}'s birthday was coming soon."),
        t.line(
            "{hero} wanted to make " + gift.thing + " as a surprise.",
            "{hero} decided to make " + gift.thing + " for {pal_him}.",
        ),
        t.line("{he} " + gift.make + "."),
    ]
    problem = [
        t.line("But then " + gift.mishap + "."),
        t.say("hero", "Now the surprise is ruined!", "Oh no! What will {I} give {pal_call} now?"),
        t.line("{hero} {was} so {sad} that {he} wanted to give up.", "{hero} sat down and felt very {sad}."),
    ]
    help_ = [
        t.line("{grown} came and sat down next to {him}.", "{grown} saw what happened."),
        t.say(
            "grown",
            "Don't give up. We can make it again, together.",
            "Mistakes happen. Let's try one more time.",
        ),
        t.line("{grown} " + gift.fix + "."),
    ]
    resolution = [
        t.line(
            "On the birthday, {hero} gave the gift to {pal}.",
            "When the big day came, {hero} gave {pal} the surprise.",
        ),
        t.say(
            "pal", "Did you make this for me? I love it!", "This is the best gift ever! Thank you, {call}!"
        ),
        t.line("{pal} gave {hero} a big hug.", "{pal} smiled from ear to ear."),
    ]
    ending = [
        t.line("{hero} felt very {proud}.", "{hero}'s heart was full of joy."),
        t.line(
            "{he} learned that a gift made with love is the best gift of all.",
            "{he} learned that it is okay to make mistakes and try again.",
        ),
    ]
    return [setup, problem, help_, resolution, ending]


def _new_friend_plot(t: _Teller) -> Beats:
    setup = _opening(t) + [
        t.line("{day}, {hero} went {place_to}.", "{day}, {hero} {was} playing {place_at}."),
        t.line(
            "There {he} saw {pal_intro} sitting all alone.",
            "Under a tree sat {pal_intro}. {pal_he} looked lonely.",
        ),
    ]
    problem = [
        t.line(
            "{pal} was new in town and did not know anyone.",
            "{pal} was very shy and did not know how to ask others to play.",
        ),
        t.line("{hero} felt a little shy too.", "{hero} wanted to say hello, but {he} felt shy."),
        t.line(
            "{he} took a deep breath and walked over.", "Then {he} thought about how lonely it must feel."
        ),
    ]
    help_ = [
        t.say(
            "hero",
            "Hi! {I} {am} {hero}. Do you want to play with {me}?",
            "Hello! Would you like to {activity} with {me}?",
        ),
        t.line("{pal} looked up and smiled.", "{pal}'s face lit up."),
        t.say("pal", "Yes, please! My name is {pal}.", "I would love to! Thank you for asking me."),
    ]
    resolution = [
        t.line("They {activity_past} together {place_at}.", "They played all day, and they laughed a lot."),
        t.line("Soon it felt like they had always been friends.", "The time went by very fast."),
        t.say("pal", "Can we play again tomorrow?", "Will you come back tomorrow?"),
        t.say("hero", "Yes! Every day!", "Of course! You are {my} friend now."),
    ]
    ending = [
        t.line(
            "{hero} and {pal} became the best of friends.", "From then on, they played together every day."
        ),
        t.line(
            "{hero} learned that saying hello can make a new friend.",
            "{hero} {was} glad {he} had been brave enough to say hello.",
        ),
    ]
    return [setup, problem, help_, resolution, ending]


SKILLS = (  # (base, ing, the hard part, success)
    (
        "ride a bike",
        "riding a bike",
        "the bike wobbled and {he} fell down",
        "{he} rode all the way down the street",
    ),
    ("jump rope", "jumping rope", "the rope got caught on {his} feet", "{he} jumped ten times in a row"),
    ("swim", "swimming", "{he} sank and got water in {his} nose", "{he} swam all the way to the other side"),
    (
        "fly a kite",
        "flying a kite",
        "the kite fell to the ground again and again",
        "the kite went up high in the sky",
    ),
)


def _practice_plot(t: _Teller) -> Beats:
    base, ing, hard, win = t.slots["skill"]
    setup = _opening(t) + [
        t.line(
            "{hero} wanted to learn to " + base + ".",
            "{hero} saw the big kids " + ing + ", and {he} wanted to try too.",
        ),
    ]
    problem = [
        t.line("{he} tried, but " + hard + "."),
        t.line("{he} tried again, and again " + hard + "."),
        t.say(
            "hero", "{I} can't do it! {I} will never learn!", "This is too hard! {I} give up!", verb="cried"
        ),
    ]
    help_ = [
        t.line("{grown} came over and sat down next to {him}.", "{grown} saw {him} and came to help."),
        t.say(
            "grown",
            "Everyone has trouble at first. Try again, and I will help you.",
            "Nobody can do it the first time. Let's practice together.",
        ),
        t.line("They practiced every day {place_at}.", "Every day after lunch, they practiced {place_at}."),
    ]
    resolution = [
        t.line("At last, one {time_of_day}, " + win + "!", "Then one day, " + win + "!"),
        t.say("hero", "Look! {I} did it! {I} did it!", "{I} can do it now!", verb="shouted"),
        t.say("grown", "I knew you could do it!", "I am so proud of you!"),
    ]
    ending = [
        t.line("{hero} felt very {proud} of {himself}.", "{hero} could not stop smiling."),
        t.line(
            "{he} learned that if you keep trying, you can do hard things.",
            "{he} learned that practice helps you grow.",
        ),
    ]
    return [setup, problem, help_, resolution, ending]


# Each cast builder picks a plot's supporting roles and its plot-specific slots (the thing, the fear...).
Plot = Callable[[_Teller], Beats]


def _cast_lost(rng, hero, taken):
    pal = _friend(rng, hero, taken) if rng.random() < 0.5 else _grown_up(rng, hero)
    thing = rng.choice([x for x in THINGS if x.can_lose])
    return {"pal": pal}, {"thing": thing}


def _cast_stuck(rng, hero, taken):
    thing = rng.choice([x for x in THINGS if x.can_stick])
    if rng.random() < 0.5:
        reacher = rng.choice(REACHERS)
        return {"pal": _animal_helper(rng, reacher)}, {"thing": thing, "reach": reacher.method}
    pal = _grown_up(rng, hero, ("mom", "dad", "grandpa"))
    return {"pal": pal}, {"thing": thing, "reach": rng.choice(GROWN_UP_REACHES)}


def _cast_broken(rng, hero, taken):
    thing = rng.choice([x for x in THINGS if x.damage])
    return {"pal": _grown_up(rng, hero)}, {"thing": thing, "fixes": FIX_BY_DAMAGE[thing.damage]}


def _cast_share(rng, hero, taken):
    return {"pal": _friend(rng, hero, taken), "grown": _grown_up(rng, hero)}, {}


def _cast_friend(rng, hero, taken):
    return {"pal": _friend(rng, hero, taken, stranger=True)}, {}


def _cast_grown(rng, hero, taken):
    return {"grown": _grown_up(rng, hero)}, {}


def _cast_gift(rng, hero, taken):
    grown = _grown_up(rng, hero)
    if rng.random() < 0.5:
        pal = _friend(rng, hero, taken)
    else:
        pal = _grown_up(
            rng, hero, tuple(k for k in ("mom", "dad", "grandma", "grandpa") if k != grown.call.lower())
        )
    return {"pal": pal, "grown": grown}, {"gift": rng.choice(GIFTS)}


PLOTS: tuple[tuple[Plot, Callable, bool], ...] = (  # (plot, cast builder, may the hero be a pair)
    (_lost_plot, _cast_lost, True),
    (_stuck_plot, _cast_stuck, True),
    (_broken_plot, _cast_broken, True),
    (_share_plot, _cast_share, False),
    (_fear_plot, _cast_grown, True),
    (_critter_plot, _cast_grown, True),
    (_rain_plot, _cast_grown, True),
    (_gift_plot, _cast_gift, True),
    (_new_friend_plot, _cast_friend, True),
    (_practice_plot, _cast_grown, True),
)


# ----------------------------------------------------------------------------------------------
# Stories
# ----------------------------------------------------------------------------------------------


def generate_story(rng: random.Random) -> str:
    """One story drawn from `rng` (and nothing else): paragraphs separated by a blank line."""
    plot, cast, allow_pair = rng.choice(PLOTS)
    taken: set[str] = set()
    hero = _hero(rng, taken, allow_pair)
    roles, extra = cast(rng, hero, taken)
    thing: Thing = extra.pop("thing", None) or rng.choice(THINGS)
    adj_thing = f"{rng.choice(thing.adjectives)} {thing.noun}"
    place = rng.choice(PLACES)
    activity, activity_past = rng.choice(ACTIVITIES)
    spot, spot2 = rng.sample(SEARCH_SPOTS, 2)
    extra |= {
        "thing": thing.noun,
        "adj_thing": adj_thing,
        "adj_thing_a": _a(adj_thing),
        "damage": thing.damage or "broke",
        "place": place.name,
        "place_at": place.at,
        "place_to": place.to,
        "activity": activity,
        "activity_past": activity_past,
        "day": rng.choice(DAYS),
        "time_of_day": rng.choice(("morning", "afternoon", "evening")),
        "search_spot": spot,
        "search_spot2": spot2,
        "found_spot": rng.choice(FOUND_SPOTS),
        "high_spot": rng.choice(HIGH_SPOTS),
        "color": rng.choice(COLORS),
        "sad": rng.choice(SAD_WORDS),
        "happy": rng.choice(HAPPY_WORDS),
        "proud": rng.choice(("proud", "happy")),
        "fear": rng.choice(FEARS),
        "critter": rng.choice(CRITTERS),
        "skill": rng.choice(SKILLS),
    }
    beats = plot(_Teller(rng, {"hero": hero, **roles}, extra))
    return _paragraphs(rng, beats)


def _paragraphs(rng: random.Random, beats: Beats) -> str:
    """Join beats into paragraphs: sometimes one block, often two to four."""
    paragraphs = [list(beats[0])]
    for beat in beats[1:]:
        if rng.random() < 0.35:
            paragraphs.append(list(beat))
        else:
            paragraphs[-1].extend(beat)
    return "\n\n".join(" ".join(sentences) for sentences in paragraphs)


def _split_rng(seed: int, split: str) -> random.Random:
    """An independent stream per (seed, split): validation is never a prefix or copy of train."""
    return random.Random(f"delphi.stories:{seed}:{split}")  # the corpus identity: never renamed


def generate_stories(n: int, seed: int = 0, split: str = "train") -> list[str]:
    """`n` stories for `split`; the same (n, seed, split) always gives the same list."""
    _check_count("n", n, minimum=0)
    _check_count("seed", seed, minimum=None)
    if not isinstance(split, str) or not split:
        raise DelphiError(f"split must be a non-empty string such as 'train' or 'validation', got {split!r}")
    rng = _split_rng(seed, split)
    return [generate_story(rng) for _ in range(n)]


# ----------------------------------------------------------------------------------------------
# Writing the corpus
# ----------------------------------------------------------------------------------------------


def _check_count(name: str, value, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DelphiError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise DelphiError(f"{name} must be at least {minimum}, got {value}")


def _write_parquet(stories: list[str], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({FEATURE: pa.array(stories, type=pa.string())})
    # fixed codec and level, no pandas or time metadata: same stories -> same bytes
    atomic.write_atomically(
        path, lambda tmp: pq.write_table(table, tmp, compression="zstd", compression_level=3)
    )


def _dataset_card(counts: dict[str, int], seed: int) -> str:
    """The README that makes the folder a self-describing hub dataset (splits, license, provenance)."""
    import pyarrow

    return f"""---
license: apache-2.0
language:
- en
pretty_name: delphi synthetic stories
---

# delphi synthetic stories

Short, simple English stories in the spirit of TinyStories, made by delphi's own template
generator (`delphi.data.stories`), so the demo pipeline (tokenizer, tokenized dataset, a tiny LM) runs
offline. Each story has a small plot (a problem, some help, a resolution and a lesson), dialogue in
quotes and a limited vocabulary. Column: `story`.

- train: {counts["train"]} stories (`train-00000.parquet`)
- validation: {counts["validation"]} stories (`validation-00000.parquet`)
- seed: {seed}; train and validation come from independent streams derived from it
- made with: delphi {__version__} (pyarrow {pyarrow.__version__}), `delphi corpus --seed {seed} --train-size {counts["train"]} \
--validation-size {counts["validation"]}`

The same seed, sizes, delphi version and pyarrow version give byte-identical files.
The text is generated by delphi's code and is licensed Apache-2.0, like delphi.
"""


def write_corpus(
    out_dir: str | os.PathLike,
    train_size: int = 10_000,
    validation_size: int = 1_000,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Write `train-00000.parquet`, `validation-00000.parquet` (column `story`) and a README card.

    A rerun with the same seed and sizes (same delphi and pyarrow versions, as its card records) finds the
    corpus already there and writes nothing; other existing parquet files are replaced only with
    `overwrite`. Returns `{"files": {split: path}, "counts": {split: n}, "written": bool}`.
    """
    _check_count("train_size", train_size, minimum=1)
    _check_count("validation_size", validation_size, minimum=1)
    _check_count("seed", seed, minimum=None)
    from delphi.inputs import check_output_dir

    out = check_output_dir(out_dir, what="--out-dir")
    files = {split: out / f"{split}-00000.parquet" for split in SPLITS}
    existing = [str(p) for p in files.values() if p.exists()]
    counts = {"train": train_size, "validation": validation_size}
    card = _dataset_card(counts, seed)
    if existing and not overwrite:
        if len(existing) == len(files) and _read_text(out / "README.md") == card:
            log.info("%s already holds this corpus (seed %d, sizes %s): nothing to do", out, seed, counts)
            return {
                "files": {split: str(path) for split, path in files.items()},
                "counts": counts,
                "written": False,
            }
        raise DelphiError(
            f"{str(out)!r} already holds a different corpus ({', '.join(existing)}; its README.md records "
            "how it was made); pass --overwrite (overwrite=True) to replace it, or choose another out_dir"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DelphiError(f"cannot create out_dir {str(out)!r}: {e}") from e

    for split in SPLITS:
        _write_parquet(generate_stories(counts[split], seed, split), files[split])
    atomic.write_atomically(out / "README.md", lambda tmp: tmp.write_text(card, encoding="utf-8"))
    return {"files": {split: str(path) for split, path in files.items()}, "counts": counts, "written": True}


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
