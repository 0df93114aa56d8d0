"""Does a Visual Genome region phrase contain a verb? (MSP stage 2, §3.2: the phrase corpus keeps only
phrases "that contain no verb", so that it holds attribute/category words, not actions.)

Why rules and not a tagger: the test must run offline with nothing to download. NLTK's and TextBlob's
taggers need `nltk_data` fetched at run time, spaCy's and Stanza's English models are separate
downloads, and lemminflect (which ships its data) only inflects a word whose part of speech is
already known. VG phrases are short noun phrases, optionally with one clause ("man riding a bike",
"dog has a red collar"), so a small lexicon plus word-order rules decides them well, and every
decision can be read off this file.

The rules, applied to each lower-cased word with its neighbours:
1. A form of be / have / do, a modal or a contraction of them ("is", "has", "it's") is a verb.
2. A participle (any "-ing" word except the nouns in `ING_NOUNS`; the "-ed" and irregular past forms
   of `VERBS`) is a verb unless it modifies a noun: right after a determiner or preposition ("the
   sleeping cat", "shirt with striped sleeves"), or at the start / after an adjective, conjunction or
   "-ly" adverb and before a noun or adjective ("parked car", "black and white striped shirt"), or an
   "-ed" participle between two nouns ("snow covered mountain"), or an "-ing" form from
   `GERUND_MODIFIERS` before a noun ("swimming pool"). After a noun it is a verb ("man riding a bike",
   "car parked on the street", "cows grazing").
3. A third-person "-s" form of `VERBS` is a verb after a singular noun or pronoun ("woman holds
   umbrella"); a base form after a plural noun, a plural pronoun or "to" ("birds fly over water").
   Verbs in `NOUN_LIKE` are exempt from this rule, because their base and "-s" forms are mostly nouns
   in VG ("bus stop", "street lights", "ocean waves"); their participles still count ("car stopped").
4. Adjectival participles (`ADJECTIVES`: "striped", "closed", "fried", ...) are adjectives everywhere.

Trade-offs: unknown words count as nouns, so an unlisted adjective before an "-ing" word makes a
false verb ("shaggy grazing sheep"); a subject-less participle before a noun reads as a modifier
("holding umbrella", missed); "-ed" forms of verbs outside `VERBS` and the "-s"/base forms of
`NOUN_LIKE` verbs are not seen; "-ing" nouns in `ING_NOUNS` are never verbs ("man painting a fence",
missed). Each of these is rarer in VG than the patterns the rules get right.
"""

from __future__ import annotations

import re
from functools import lru_cache


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Rule 1: clause-forming function words.
AUXILIARIES = _word_set(
    """is are was were am be been being has have had do does did could would should must might shall
    isn't aren't wasn't weren't hasn't haven't hadn't don't doesn't didn't can't cannot won't couldn't
    wouldn't shouldn't it's that's there's here's he's she's what's who's they're we're you're i'm i've
    they've we've you've"""
)

# Closed word classes, used as context.
DETERMINERS = _word_set(
    """a an the this these those some any many several few each every all both no another other his her
    its their my your our one two three four five six seven eight nine ten eleven twelve dozen lots"""
)
PREPOSITIONS = _word_set(
    """on in at of with near by under over above below behind beside besides next to from into onto
    through across along alongside around against between inside outside atop beneath underneath toward
    towards for off up down out like without upon about past during within amid among throughout via per
    than as"""
)
CONJUNCTIONS = _word_set("and or but nor & plus while")
SINGULAR_PRONOUNS = _word_set("he she it this someone somebody something everyone nobody who which that")
PLURAL_PRONOUNS = _word_set("they we i you who which that these those")
PRONOUNS = SINGULAR_PRONOUNS | PLURAL_PRONOUNS | _word_set("him them me us")
ADVERBS = _word_set("very really too so quite not also just still almost here there now then even only")

# Rule 4 and context: adjectives (colours, sizes, materials, states) and participial adjectives.
ADJECTIVES = _word_set(
    """white black blue green red brown yellow gray grey orange pink purple silver gold golden tan beige
    dark light bright pale navy maroon teal turquoise violet cream khaki blond blonde multicolored
    colorful colourful reddish bluish greenish whitish brownish yellowish grayish greyish pinkish small
    large big little tiny huge giant tall short long wide narrow thin thick round square rectangular
    circular oval triangular flat curved high low deep shallow wooden wood metal metallic plastic glass
    brick stone concrete cement leather paper cloth rubber steel iron wicker ceramic porcelain marble
    cotton denim wool woolen furry fluffy old new young open empty full wet dry clean dirty clear cloudy
    sunny snowy grassy sandy rocky leafy bare shiny dull smooth rough soft hard hot cold warm fresh ripe
    raw hairy dusty rusty muddy messy curly wavy fuzzy bushy spiky crispy juicy pretty beautiful nice
    cute happy sad same different various whole half double single main front side top bottom upper lower
    left right middle center central far distant outdoor indoor electric wild adult male female closed
    striped spotted checkered plaid dotted patterned colored coloured tiled paved crowded cluttered faded
    tinted padded stuffed assorted mixed wrinkled rounded sliced diced chopped fried baked grilled
    toasted boiled cooked frosted glazed tired"""
)
LY_NOUNS = _word_set("jelly belly lily family butterfly dragonfly firefly assembly italy july rally")

# Rule 2: "-ing" words that are nouns in VG, and gerunds that name a kind of thing before a noun.
ING_NOUNS = _word_set(
    """awning bedding building ceiling clothing coating drawing dumpling duckling earring evening
    everything anything nothing something filling fencing flooring frosting icing lettering lighting
    lightning lining marking molding moulding morning netting opening painting paneling panelling parking
    piping plumbing pudding railing roofing sapling seedling setting shelving siding sibling stocking
    stuffing tiling topping trimming viking wedding wiring writing herring housing wrapping"""
)
GERUND_MODIFIERS = _word_set(
    """dining living swimming landing washing shopping waiting boarding fishing sleeping racing running
    training baking frying mixing measuring rolling sailing"""
)

# Rules 2 and 3: common verbs of VG phrases (lemmas).
VERBS = _word_set(
    """add appear approach arrive attach bake balance bark bathe bend bite blow board border bounce break
    brush build buy carry carve catch chase cheer chew clap clean climb collect comb come contain cook
    cover crawl cross crouch cry cut dance decorate dig display dive dock drag draw dress drink drip
    drive drop eat enter face fall feed fetch fill fish fix float fly fold follow gallop gather give
    glide go grab graze greet grill grin grip grow guard hand hang hide hike hit hold hop hover hug hunt
    jog jump kick kneel kiss knit laugh lay lead lean leap leave lick lie lift light line listen load
    look lounge make march mount move nap observe open overlook pack paddle paint park pass pat pay peek
    peel perch pet pick pitch place plant play point pose pour prepare press protect pull push race reach
    read reflect relax rest ride roll row run sail say scoop scratch see serve sew shade shake share
    shave shine shop show sing sip sit skate ski sleep slide smell smile smoke sniff soar speak splash
    spray squat stack stand stare steer step stick stir stop stretch stroll support surf surround swim
    swing take talk taste tear throw tie toss touch tow train travel trot try turn type use wade wait
    walk wash watch water wave wear whisper win work wrap write yawn"""
)
# Verbs whose base and "-s" forms are mostly nouns in VG phrases.
NOUN_LIKE = _word_set(
    """bark board border brush cook cover cross cut dance display dive dock drink dress drip drop face
    fall fish hand hike hop hug kiss lead lift light line load mount nap open pack paint park pass pat
    pet pick pitch place plant point pose press race rest roll row sail scoop shade shop show skate slide
    smoke spray stack stand step stick stop stretch support surf swing tear tie toss train turn type
    water wave work wrap"""
)
IRREGULAR = {  # lemma: (past, past participle)
    "bend": ("bent", "bent"),
    "bite": ("bit", "bitten"),
    "blow": ("blew", "blown"),
    "break": ("broke", "broken"),
    "build": ("built", "built"),
    "buy": ("bought", "bought"),
    "catch": ("caught", "caught"),
    "come": ("came", "come"),
    "cut": ("cut", "cut"),
    "dig": ("dug", "dug"),
    "dive": ("dove", "dived"),
    "draw": ("drew", "drawn"),
    "drink": ("drank", "drunk"),
    "drive": ("drove", "driven"),
    "eat": ("ate", "eaten"),
    "fall": ("fell", "fallen"),
    "feed": ("fed", "fed"),
    "fly": ("flew", "flown"),
    "give": ("gave", "given"),
    "go": ("went", "gone"),
    "grow": ("grew", "grown"),
    "hang": ("hung", "hung"),
    "hide": ("hid", "hidden"),
    "hit": ("hit", "hit"),
    "hold": ("held", "held"),
    "kneel": ("knelt", "knelt"),
    "lay": ("laid", "laid"),
    "lead": ("led", "led"),
    "leap": ("leapt", "leapt"),
    "leave": ("left", "left"),
    "lie": ("lay", "lain"),
    "light": ("lit", "lit"),
    "make": ("made", "made"),
    "pay": ("paid", "paid"),
    "read": ("read", "read"),
    "ride": ("rode", "ridden"),
    "run": ("ran", "run"),
    "say": ("said", "said"),
    "see": ("saw", "seen"),
    "sew": ("sewed", "sewn"),
    "shake": ("shook", "shaken"),
    "shine": ("shone", "shone"),
    "sing": ("sang", "sung"),
    "sit": ("sat", "sat"),
    "sleep": ("slept", "slept"),
    "slide": ("slid", "slid"),
    "speak": ("spoke", "spoken"),
    "stand": ("stood", "stood"),
    "stick": ("stuck", "stuck"),
    "swim": ("swam", "swum"),
    "swing": ("swung", "swung"),
    "take": ("took", "taken"),
    "tear": ("tore", "torn"),
    "throw": ("threw", "thrown"),
    "wear": ("wore", "worn"),
    "win": ("won", "won"),
    "write": ("wrote", "written"),
}
# Inflected forms that are far more often something else: direction, tool, LED, bird, bike part.
AMBIGUOUS_FORMS = _word_set("left saw bit led dove spoke")
IRREGULAR_PLURALS = _word_set("people men women children feet teeth mice geese police cattle")

_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")
_DOUBLES_FINAL = re.compile(r"^(?:qu|[^aeiou])*[aeiou][^aeiouwxy]$")  # one vowel, then one consonant


def _third_person(lemma: str) -> str:
    if re.search(r"(?:s|x|z|ch|sh|[^aeiou]o)$", lemma):
        return lemma + "es"
    if re.search(r"[^aeiou]y$", lemma):
        return lemma[:-1] + "ies"
    return lemma + "s"


def _regular_past(lemma: str) -> str:
    if lemma.endswith("e"):
        return lemma + "d"
    if re.search(r"[^aeiou]y$", lemma):
        return lemma[:-1] + "ied"
    if _DOUBLES_FINAL.match(lemma):
        return lemma + lemma[-1] + "ed"
    return lemma + "ed"


BASE_FORMS = VERBS - NOUN_LIKE  # the lemmas whose base and "-s" forms rule 3 reads as verbs
THIRD_PERSON_FORMS = frozenset(_third_person(lemma) for lemma in BASE_FORMS)
# Past-tense-only forms ("wore") are never compound modifiers the way participles are ("snow covered").
PAST_ONLY_FORMS = frozenset(past for past, participle in IRREGULAR.values() if past != participle) - VERBS
PARTICIPLE_FORMS = (
    frozenset(
        form
        for lemma in VERBS
        for form in (IRREGULAR[lemma] if lemma in IRREGULAR else (_regular_past(lemma),))
    )
    - VERBS
    - AMBIGUOUS_FORMS
    - ADJECTIVES
)

_CLOSED_CLASSES = DETERMINERS | PREPOSITIONS | CONJUNCTIONS | PRONOUNS | ADVERBS | AUXILIARIES


def _words(phrase: str) -> list[str]:
    return _WORD.findall(phrase.lower().replace("\u2019", "'"))


def _is_modifier(word: str) -> bool:
    """Adjective, or an "-ly" adverb ("freshly cut grass")."""
    return word in ADJECTIVES or (word.endswith("ly") and len(word) >= 5 and word not in LY_NOUNS)


def _is_nounish(word: str) -> bool:
    """Open-class words that are not adjectives count as nouns (subjects or heads)."""
    return not word.isdigit() and word not in _CLOSED_CLASSES and not _is_modifier(word)


def _is_plural(word: str) -> bool:
    return word in IRREGULAR_PLURALS or (
        word.endswith("s") and not word.endswith(("ss", "us", "is", "'s")) and len(word) > 3
    )


def _is_participle(word: str) -> bool:
    if word.endswith("ing") and "-" not in word:
        return word not in ING_NOUNS and len(word) >= 5 and re.search(r"[aeiouy]", word[:-3]) is not None
    return word in PARTICIPLE_FORMS


def _modifies_noun(words: list[str], index: int, previous_is_modifier: bool) -> bool:
    """Rule 2: the participle at `index` modifies the noun after it instead of acting as a verb."""
    word = words[index]
    previous = words[index - 1] if index > 0 else None
    following = words[index + 1] if index + 1 < len(words) else None
    if previous in DETERMINERS or previous in PREPOSITIONS or (previous or "").isdigit():
        return True
    before_noun = following is not None and following not in _CLOSED_CLASSES
    if not before_noun:
        return False
    if previous is None or previous in CONJUNCTIONS or previous_is_modifier or _is_modifier(previous):
        return True
    if word in GERUND_MODIFIERS:
        return True
    return not word.endswith("ing") and word not in PAST_ONLY_FORMS and _is_nounish(previous)


def _is_finite_verb(word: str, previous: str | None) -> bool:
    """Rule 3: an "-s" form after a singular subject, a base form after a plural one or "to"."""
    if previous is None:
        return False
    if word in THIRD_PERSON_FORMS:
        return previous in SINGULAR_PRONOUNS or (_is_nounish(previous) and not _is_plural(previous))
    if word in BASE_FORMS:
        return (
            previous in PLURAL_PRONOUNS
            or previous == "to"
            or (_is_nounish(previous) and _is_plural(previous))
        )
    return False


def find_verbs(phrase: str) -> list[str]:
    """The words of `phrase` that the rules of this module judge to be verbs, in order."""
    words = _words(phrase)
    verbs = []
    previous_is_modifier = False
    for index, word in enumerate(words):
        is_modifier = False
        if word in AUXILIARIES:
            verbs.append(word)
        elif word in _CLOSED_CLASSES or word in ADJECTIVES:
            pass
        elif _is_participle(word):
            is_modifier = _modifies_noun(words, index, previous_is_modifier)
            if not is_modifier:
                verbs.append(word)
        elif _is_finite_verb(word, words[index - 1] if index > 0 else None):
            verbs.append(word)
        previous_is_modifier = is_modifier
    return verbs


@lru_cache(maxsize=1 << 16)
def contains_verb(phrase: str) -> bool:
    """True when `phrase` holds a verb by the rules above; cached because VG repeats phrases a lot."""
    return bool(find_verbs(phrase))
