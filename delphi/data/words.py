"""The word lists the embedded corpus' templates are filled from: names, places, things, feelings, and
the small records (a place's prepositions, a thing's adjectives and damage, a fear and its comfort, ...)
that keep a story's sentences agreeing with each other. Data only; `cast.py` and `plots.py` use it."""

from __future__ import annotations

from typing import NamedTuple

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
