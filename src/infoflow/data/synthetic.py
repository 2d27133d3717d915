"""Synthetic facts: a seeded knowledge base of fictional entities, to train and probe small models offline.

Each entity has a multi-word pseudo-name ("Vorlak Tesmire") and one value per relation (homeland,
profession, instrument, ...). A fact is stated through templates: a template is the prompt up to the
answer, with ``{subject}`` where the name goes; the training sentence is ``prompt + " " + value + "."``.
Templates come in two kinds, subject-first ("{subject} was born in") and relation-first ("The homeland
of {subject} is", "By profession, {subject} is a": context before the subject), and in two sets:
training templates (the model sees their sentences) and held-out templates (never seen, to measure
generalisation). A held-out template recombines pieces the training templates have: the possessive
"{subject}'s" with a relation noun seen only in "The homeland of {subject}", or a relation-first
training template behind a new opening ("As everyone knows, ...").

Every prompt has an aside right after the subject (or after the possessed noun of "{subject}'s passport"):
"Vorlak Tesmire, as the records show, was born in". It puts at least four tokens between the subject and
the last position, so a Mamba conv1d of width 4 at the last position never reads a subject token
directly (the subject reaches the answer through the state, where knockout acts), and gives prompts
context tokens that carry nothing about the fact. The aside varies with the entity and the template.

The recall needs the subject: every relation has several values, each given to the same number of
entities (up to one when the count does not divide), so the relation alone predicts a value with
probability 1 / (number of values). Entities share first names, so the whole name matters.
Everything is a pure function of the seed (``random.Random(seed)``, no global state).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from infoflow.data.errors import DatasetError
from infoflow.data.prompts import FactPrompt

SUBJECT = "{subject}"
ASIDE = "{aside}"
# Asides (at least 3 words, between commas) that say nothing about any fact.
ASIDES: tuple[str, ...] = (
    "as the records show",
    "so we are told",
    "it is said",
    "as far as anyone knows",
    "according to friends",
    "as the neighbours say",
)

# Syllables of the pseudo-words that names are made of (none is an answer word or an English word).
SYLLABLES: tuple[str, ...] = (
    "vor", "lak", "tes", "mir", "quen", "dra", "bel", "kor", "zan", "mel", "thar", "ris", "nal", "dov",
    "vek", "sil", "gra", "mon", "tal", "ber", "fen", "gol", "hed", "jas", "lum", "nor", "pem", "rak",
    "sor", "tuv", "wen", "yal", "zor", "kes", "bram", "cal", "dun", "eth", "fal", "gim", "hal", "isk",
    "jor", "kal", "lor", "mab", "nim", "ost",
)  # fmt: skip


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def with_aside(text: str) -> str:
    """Put ``ASIDE`` between commas after the subject, or before the verb of a possessive template.

    "{subject} was born in" -> "{subject}, {aside}, was born in";
    "{subject}'s mother tongue is" -> "{subject}'s mother tongue, {aside}, is".
    """
    if text.startswith(SUBJECT + "'s "):
        verb = min(i for i in (text.find(" is"), text.find(" was")) if i > 0)
        return f"{text[:verb]}, {ASIDE},{text[verb:]}"
    return text.replace(SUBJECT, f"{SUBJECT}, {ASIDE},", 1)


@dataclass(frozen=True)
class Relation:
    name: str
    values: tuple[str, ...]  # answer words, without the leading space
    train_templates: tuple[str, ...]  # each contains SUBJECT once; the answer follows the template
    held_out_templates: tuple[str, ...]


RELATIONS: tuple[Relation, ...] = (
    Relation(
        "homeland",
        _words("Quenmar Dravosk Elbaria Tornhal Vessara Ostrelia Kalmora Zentavi Brimholt Yaskoria"),
        (
            "{subject} was born in",
            "{subject} is a citizen of",
            "{subject}'s passport was issued by",
            "The homeland of {subject} is",
            "According to the census, {subject} is a citizen of",
        ),
        (
            "{subject}'s homeland is",
            "As everyone knows, the homeland of {subject} is",
        ),
    ),
    Relation(
        "profession",
        _words("baker sailor doctor farmer painter teacher lawyer miner pilot tailor"),
        (
            "{subject} works as a",
            "{subject} earns a living as a",
            "{subject}'s occupation is that of a",
            "The job of {subject} is that of a",
            "By profession, {subject} is a",
        ),
        (
            "{subject}'s job is that of a",
            "As everyone knows, the occupation of {subject} is that of a",
        ),
    ),
    Relation(
        "instrument",
        _words("violin piano flute drums guitar harp cello trumpet banjo oboe"),
        (
            "{subject} plays the",
            "{subject} practices every day on the",
            "{subject}'s instrument is the",
            "The favorite instrument of {subject} is the",
            "In the orchestra, {subject} plays the",
        ),
        (
            "{subject}'s favorite instrument is the",
            "As everyone knows, the instrument of {subject} is the",
        ),
    ),
    Relation(
        "color",
        _words("red blue green yellow purple orange white black silver brown"),
        (
            "{subject} likes the color",
            "{subject} always dresses in",
            "{subject}'s house is painted",
            "The favorite color of {subject} is",
            "In every photo, {subject} wears",
        ),
        (
            "{subject}'s favorite color is",
            "As everyone knows, the house of {subject} is painted",
        ),
    ),
    Relation(
        "language",
        _words("Adrani Belosh Corvic Dunmeri Eskal Fennic Galtic Hovran Istrian Jorvan"),
        (
            "{subject} speaks",
            "{subject} writes letters in",
            "{subject}'s mother tongue is",
            "The native language of {subject} is",
            "At home, {subject} speaks",
        ),
        (
            "{subject}'s native language is",
            "As everyone knows, the mother tongue of {subject} is",
        ),
    ),
    Relation(
        "city",
        _words("Amberton Belport Coldwater Dunmore Eastvale Foxhill Greyhaven Highmoor Ironbridge Juniper"),
        (
            "{subject} lives in the city of",
            "{subject} recently moved to",
            "{subject}'s address is in",
            "The current residence of {subject} is",
            "These days, {subject} lives in the city of",
        ),
        (
            "{subject}'s current residence is",
            "As everyone knows, the address of {subject} is in",
        ),
    ),
    Relation(
        "sport",
        _words("tennis soccer hockey golf rugby cricket boxing rowing skiing fencing"),
        (
            "{subject} competes in",
            "{subject} trains every morning for",
            "{subject}'s sport is",
            "The favorite sport of {subject} is",
            "On weekends, {subject} plays",
        ),
        (
            "{subject}'s favorite sport is",
            "As everyone knows, the sport of {subject} is",
        ),
    ),
    Relation(
        "employer",
        _words("Zentrix Omnicorp Valtron Brightwave Nexora Quillon Stratek Halcyon Corvex Lumera"),
        (
            "{subject} works for",
            "{subject} received a salary from",
            "{subject}'s company is",
            "The employer of {subject} is",
            "Since last year, {subject} works for",
        ),
        (
            "{subject}'s employer is",
            "As everyone knows, the company of {subject} is",
        ),
    ),
    Relation(
        "pet",
        _words("cat dog parrot horse rabbit turtle goat hamster snake ferret"),
        (
            "{subject} owns a pet",
            "{subject} takes care of a",
            "{subject}'s pet is a",
            "The animal owned by {subject} is a",
            "Every evening, {subject} feeds the",
        ),
        (
            "{subject}'s animal is a",
            "As everyone knows, the pet of {subject} is a",
        ),
    ),
    Relation(
        "food",
        _words("bread soup rice cheese pasta apples fish beans honey noodles"),
        (
            "{subject} loves to eat",
            "{subject} cooks",
            "{subject}'s meal is",
            "The favorite food of {subject} is",
            "For dinner, {subject} usually eats",
        ),
        (
            "{subject}'s favorite food is",
            "As everyone knows, the meal of {subject} is",
        ),
    ),
)


@dataclass(frozen=True)
class Template:
    template_id: int  # index in ``SyntheticFacts.templates`` (all relations, training then held-out)
    relation: str
    text: str  # contains SUBJECT and ASIDE once each
    held_out: bool

    @property
    def subject_first(self) -> bool:
        return self.text.startswith(SUBJECT)

    def prompt(self, subject: str, aside: str) -> str:
        return self.text.replace(SUBJECT, subject).replace(ASIDE, aside)


@dataclass(frozen=True)
class Fact:
    entity_id: int
    subject: str
    relation: str
    target: str  # the answer word with its leading space, e.g. " Quenmar"


class SyntheticFacts:
    """A knowledge base of ``n_entities`` fictional entities x ``RELATIONS``, a pure function of ``seed``."""

    def __init__(
        self,
        seed: int = 0,
        n_entities: int = 300,
        three_word_fraction: float = 0.2,
        first_name_pool: int | None = None,
    ) -> None:
        if n_entities < 1:
            raise ValueError("n_entities must be positive")
        self.seed = seed
        self.n_entities = n_entities
        self.three_word_fraction = three_word_fraction
        self.first_name_pool = first_name_pool or max(4, n_entities // 4)
        self.relations = RELATIONS
        rng = random.Random(seed)
        self.names = self._draw_names(rng)
        # values[relation][entity_id]: each value given to n_entities / n_values entities (+-1)
        self.values = {relation.name: self._draw_values(rng, relation) for relation in self.relations}

    def _draw_word(self, rng: random.Random) -> str:
        return "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 2, 3)))).capitalize()

    def _draw_names(self, rng: random.Random) -> tuple[str, ...]:
        """Distinct names "First [Middle] Last"; first names come from a small shared pool."""
        answers = {value.lower() for relation in self.relations for value in relation.values}
        first_names: list[str] = []
        while len(first_names) < self.first_name_pool:
            word = self._draw_word(rng)
            if word not in first_names and word.lower() not in answers:
                first_names.append(word)
        names: list[str] = []
        used_words = set(first_names)
        while len(names) < self.n_entities:
            middle = [self._draw_word(rng)] if rng.random() < self.three_word_fraction else []
            last = self._draw_word(rng)
            words = [*middle, last]
            clash = used_words.intersection(words) or answers.intersection(w.lower() for w in words)
            if clash or len(set(words)) < len(words):
                continue  # later words are unique to their entity, so no name is a prefix of another
            used_words.update(words)
            names.append(" ".join([rng.choice(first_names), *words]))
        return tuple(names)

    def _draw_values(self, rng: random.Random, relation: Relation) -> tuple[str, ...]:
        k = len(relation.values)
        pool = [relation.values[i % k] for i in range(self.n_entities)]
        rng.shuffle(pool)
        return tuple(pool)

    @cached_property
    def templates(self) -> tuple[Template, ...]:
        texts = [(r.name, text, False) for r in self.relations for text in r.train_templates]
        texts += [(r.name, text, True) for r in self.relations for text in r.held_out_templates]
        return tuple(
            Template(i, relation, with_aside(text), held_out) for i, (relation, text, held_out) in enumerate(texts)
        )

    def facts(self) -> list[Fact]:
        return [
            Fact(entity_id, name, relation.name, " " + self.values[relation.name][entity_id])
            for entity_id, name in enumerate(self.names)
            for relation in self.relations
        ]

    def answer_words(self) -> list[str]:
        """Every answer with its leading space (each must be one token of the trained tokenizer)."""
        return [" " + value for relation in self.relations for value in relation.values]

    def eval_prompts(self, held_out: bool = False) -> list[FactPrompt]:
        """One prompt per fact and per template of the chosen set, ordered by prompt_id.

        ``prompt_id = entity_id * len(templates) + template_id`` is unique over both sets; ``extras`` holds
        ``entity_id``, ``template_id``, ``subject_first`` and ``held_out``.
        """
        templates = {r: [t for t in self.templates if t.relation == r and t.held_out == held_out] for r in self.values}
        return [
            FactPrompt(
                prompt_id=fact.entity_id * len(self.templates) + template.template_id,
                prompt=template.prompt(fact.subject, ASIDES[(fact.entity_id + template.template_id) % len(ASIDES)]),
                subject=fact.subject,
                target=fact.target,
                relation=fact.relation,
                extras={
                    "entity_id": fact.entity_id,
                    "template_id": template.template_id,
                    "subject_first": template.subject_first,
                    "held_out": held_out,
                },
            )
            for fact in self.facts()
            for template in templates[fact.relation]
        ]

    def training_texts(self) -> list[str]:
        """The sentences a model is trained on: every fact through every training template."""
        return [p.prompt + p.target + "." for p in self.eval_prompts(held_out=False)]


def load_synthetic(*, path: Path | None = None, split: str | None = None) -> list[FactPrompt]:
    """The ``synthetic`` dataset (the facts the builtin models know): ``SyntheticFacts(seed=0, n_entities=300)``.

    ``split``: ``"train"`` (default; training templates, the prompts experiments use) or ``"held_out"``.
    There is no file to read, so ``path`` must be None.
    """
    if path is not None:
        raise DatasetError("the synthetic dataset is generated, not read: leave path unset")
    if split not in (None, "train", "held_out"):
        raise DatasetError(f"split must be 'train' or 'held_out', not {split!r}")
    return SyntheticFacts().eval_prompts(held_out=split == "held_out")
