"""The offline verb test on hand-labelled Visual Genome-style region phrases."""

import pytest

from lxmert_s_msp.data.verbs import PARTICIPLE_FORMS, THIRD_PERSON_FORMS, contains_verb, find_verbs

WITH_VERB = [
    "man riding a bike",
    "a man is standing",
    "people walking on the sidewalk",
    "the dog has a red collar",
    "dog sitting on grass",
    "woman holds umbrella",
    "man wearing a white shirt",
    "bus parked on the street",
    "kite flying in the sky",
    "the sky is blue",
    "giraffes eating leaves from a tree",
    "birds fly over the water",
    "there are two zebras",
    "it's a sunny day",
    "the man wore a hat",
    "girl who rides a horse",
    "plate filled with food",
    "boy on skateboard doing a trick",
    "cows grazing in field",
    "table covered with a white cloth",
    "snow covering the ground",
    "the horse stood in the field",
    "man in black riding",
    "woman with umbrella walking",
    "plane landing on runway",
    "elephant eats grass",
    "a sign that says stop",
    "boat docked at the pier",
    "waves crashing",
    "man sits on bench",
]

WITHOUT_VERB = [
    "green old car",
    "white clouds in blue sky",
    "wooden bench near the path",
    "clock on the tower",
    "parked car on the street",
    "striped shirt on man",
    "sleeping cat on the bed",
    "a tall brick building",
    "painting on the wall",
    "parking meter on the sidewalk",
    "living room with a couch",
    "swimming pool",
    "ceiling fan",
    "black and white striped shirt",
    "snow covered mountain",
    "bus stop",
    "ski lift over the trees",
    "fruit stands",
    "traffic lights",
    "the left side of the road",
    "two skis in the snow",
    "a bowl of fried rice",
    "writing on the side of the train",
    "man's hat",
    "broken window on building",
    "closed door",
    "waves in the ocean",
    "wrist watch",
    "landing gear of plane",
    "a t-shirt",
    "knife on a cutting board",
    "row of parked motorcycles",
    "chocolate frosting on a cake",
    "running water",
]


@pytest.mark.parametrize("phrase", WITH_VERB)
def test_phrase_with_verb(phrase):
    assert contains_verb(phrase) is True


@pytest.mark.parametrize("phrase", WITHOUT_VERB)
def test_phrase_without_verb(phrase):
    assert contains_verb(phrase) is False


@pytest.mark.parametrize(
    ("phrase", "verbs"),
    [
        ("A man is riding a horse.", ["is", "riding"]),
        ("The woman holds an umbrella", ["holds"]),
        ("parked car, car parked on street", ["parked"]),
        ("Snow-covered mountain", []),
    ],
)
def test_find_verbs_names_the_verbs(phrase, verbs):
    assert find_verbs(phrase) == verbs


def test_inflections_follow_spelling_rules():
    assert {"carries", "goes", "watches", "sits", "skis"} <= THIRD_PERSON_FORMS
    assert {"carried", "squatted", "skied", "placed", "stopped", "worn", "ridden"} <= PARTICIPLE_FORMS
    # Direction, tool, adjective: never read as verb forms.
    assert not {"left", "saw", "closed", "striped"} & PARTICIPLE_FORMS
