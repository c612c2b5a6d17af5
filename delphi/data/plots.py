"""The ten plots of the embedded corpus. Each takes a `Teller` (the story's cast and slots) and returns
its beats: setup, problem, help, resolution, ending, each a list of sentences."""

from __future__ import annotations

from delphi.data.cast import Teller
from delphi.data.words import Critter, Fear, Gift

Beats = list[list[str]]


def opening(t: Teller) -> list[str]:
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


def lost_plot(t: Teller) -> Beats:
    setup = opening(t) + [
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


def stuck_plot(t: Teller) -> Beats:
    setup = opening(t) + [
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


def broken_plot(t: Teller) -> Beats:
    setup = opening(t) + [
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


def share_plot(t: Teller) -> Beats:
    setup = opening(t) + [
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


def fear_plot(t: Teller) -> Beats:
    fear: Fear = t.slots["fear"]
    setup = opening(t) + [t.line(fear.setup)]
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


def critter_plot(t: Teller) -> Beats:
    critter: Critter = t.slots["critter"]
    setup = opening(t) + [
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


def rain_plot(t: Teller) -> Beats:
    setup = opening(t) + [
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


def gift_plot(t: Teller) -> Beats:
    gift: Gift = t.slots["gift"]
    setup = opening(t) + [
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


def new_friend_plot(t: Teller) -> Beats:
    setup = opening(t) + [
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


def practice_plot(t: Teller) -> Beats:
    base, ing, hard, win = t.slots["skill"]
    setup = opening(t) + [
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
