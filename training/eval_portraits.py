"""Who is in a folder of portraits, for ``gramcast evaluate``: each sub-folder a person (the layout to use), or
the loose photos of a flat folder grouped by the person number in their names."""
from __future__ import annotations

import re
from pathlib import Path

__all__ = ["person_number", "find_portraits", "layout_notes"]


#: a field of a file name that can be a person's number: digits only, at most 5 (longer ones are dates and
#: times, IMG_20240501_123456.jpg)
_PERSON_NUMBER = re.compile(r"[0-9]{1,5}")


def person_number(stem: str) -> str | None:
    """The person a loose photo's name gives, ``<anything>_<NNN>_<anything>`` -> ``NNN`` (as written): the one
    field between underscores, neither first nor last, made of digits. None where there is none, or several
    (``photo_2024_05_01``: which?)."""
    fields = stem.split("_")
    if len(fields) < 3 or not fields[0] or not fields[-1]:
        return None
    middle = [f for f in fields[1:-1] if f.isascii() and f.isdigit()]
    return middle[0] if len(middle) == 1 and _PERSON_NUMBER.fullmatch(middle[0]) else None


def find_portraits(root: Path) -> list[tuple[str, list[Path]]]:
    """``[(person, [photos...])]``, each person's photos in name order (the first is the one enrolled from).

    Each sub-folder is a person (the layout to use). Loose photos of a flat folder (no sub-folder with
    photos) are grouped by ``person_number`` when every one of them has one and at least two share one: the
    London set's ``neutral_001_03.jpg`` and ``smiling_001_08.jpg`` are person ``001``. Otherwise, and beside
    sub-folders, each loose photo is a person of its own, named by its stem."""
    from gramcast.face.prepare import IMAGE_SUFFIXES

    people, loose, flat = [], [], True
    for p in sorted(root.iterdir()):
        if p.is_dir():
            photos = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            if photos:
                people.append((p.name, photos))
                flat = False
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            people.append((p.stem, [p]))
            loose.append(p)
    numbers = [person_number(p.stem) for p in loose]
    # all or nothing: a folder where only some names carry a number is not one naming scheme, and guessing
    # there would merge strangers
    if flat and loose and None not in numbers and len(set(numbers)) < len(numbers):
        groups: dict[str, list[Path]] = {}
        for number, photo in zip(numbers, loose):
            groups.setdefault(number, []).append(photo)
        return [(number, sorted(groups[number])) for number in sorted(groups)]
    return people


def layout_notes(root: Path, people: list[tuple[str, list[Path]]]) -> list[str]:
    """What the folder's layout did to the evaluation: a flat folder grouped by the names, or no person with
    a second photo (id_xpose unmeasured)."""
    notes = []
    grouped = [(person, photos) for person, photos in people if len(photos) > 1 and photos[0].parent == root]
    if grouped:
        person, photos = grouped[0]
        notes.append(f"flat folder: {sum(len(p) for _, p in people)} photos grouped into {len(people)} people by "
                     f"the person number in their names ({photos[0].name} and {photos[1].name}: person {person})")
    if all(len(photos) == 1 for _, photos in people):
        notes.append("no person has a second photo, so id_xpose is not measured: put each person's photos in a "
                     "sub-folder of their own (or, in a flat folder, name them <anything>_<NNN>_<anything>, NNN the "
                     "person's number)")
    return notes
