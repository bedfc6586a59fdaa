"""Label-set profiles: the model's 20 CIHP classes re-expressed in the ids other tools use.

Downstream code trained on LIP or ATR, or a virtual try-on pipeline, expects its own
label ids; a job may ask for one of these profiles (``labels`` in the submission), and
``labels.png``, ``colored.png`` (that profile's palette), the legend and every class
list of ``result.json`` use it. Each profile is a table from CIHP id to its id, written
out below with a note wherever the two sets do not match one to one: a CIHP class the
profile has no class for says which class takes it, and a profile class CIHP cannot
express is listed as never produced (never invented). docs/api.md's tables are these.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common.labels import CIHP_CLASSES, voc_colormap
from m2fp_contract.schema import LabelProfile


@dataclass(frozen=True)
class Profile:
    name: LabelProfile
    classes: tuple[str, ...]  # this profile's class names, by id
    from_cihp: tuple[int, ...]  # CIHP class id -> this profile's class id
    notes: dict[str, str] = field(default_factory=dict)  # CIHP or profile class name -> why it maps as it does
    never: tuple[str, ...] = ()  # profile classes CIHP cannot express: never in an output

    @property
    def lookup(self) -> np.ndarray:
        """``lookup[cihp_labels]`` gives this profile's labels."""
        return np.asarray(self.from_cihp, np.uint8)

    @property
    def palette(self) -> np.ndarray:
        """``(n, 3)`` uint8 colors: the PASCAL-VOC map over this profile's ids, as SCHP draws
        LIP, ATR and CIHP alike."""
        return voc_colormap(len(self.classes))

    def legend(self) -> list[dict]:
        """The palette as JSON-ready rows: id, name, RGB color."""
        palette = self.palette
        return [{"id": i, "name": name, "color": [int(c) for c in palette[i]]} for i, name in enumerate(self.classes)]


CIHP = Profile(LabelProfile.CIHP, CIHP_CLASSES, tuple(range(len(CIHP_CLASSES))))

LIP = Profile(
    LabelProfile.LIP,
    ("Background", "Hat", "Hair", "Glove", "Sunglasses", "Upper-clothes", "Dress", "Coat", "Socks", "Pants",
     "Jumpsuits", "Scarf", "Skirt", "Face", "Left-arm", "Right-arm", "Left-leg", "Right-leg", "Left-shoe",
     "Right-shoe"),
    # The same ids as CIHP except 10: CIHP's Torso-skin, LIP's Jumpsuits.
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 11, 12, 13, 14, 15, 16, 17, 18, 19),
    notes={"Torso-skin": "LIP has no skin-of-torso class (its id 10 is Jumpsuits): Background"},
    never=("Jumpsuits",),
)

ATR = Profile(
    LabelProfile.ATR,
    ("Background", "Hat", "Hair", "Sunglasses", "Upper-clothes", "Skirt", "Pants", "Dress", "Belt", "Left-shoe",
     "Right-shoe", "Face", "Left-leg", "Right-leg", "Left-arm", "Right-arm", "Bag", "Scarf"),
    # CIHP: Background Hat Hair Glove Sunglasses UpperClothes Dress Coat Socks Pants
    #       Torso-skin Scarf Skirt Face Left-arm Right-arm Left-leg Right-leg Left-shoe Right-shoe
    (0, 1, 2, 0, 3, 4, 7, 4, 0, 6, 0, 17, 5, 11, 14, 15, 12, 13, 9, 10),
    notes={
        "Glove": "ATR has no glove class, and a glove's side is unknown (ATR counts hands as arms): Background",
        "Coat": "ATR counts coats as Upper-clothes",
        "Socks": "ATR has no sock class, and a sock's side is unknown: Background",
        "Torso-skin": "ATR has no skin-of-torso class: Background",
    },
    never=("Belt", "Bag"),
)

SIMPLE = Profile(
    LabelProfile.SIMPLE,
    ("Background", "Head", "Upper-body", "Lower-body", "Arms", "Legs", "Shoes"),
    # CIHP: Background Hat Hair Glove Sunglasses UpperClothes Dress Coat Socks Pants
    #       Torso-skin Scarf Skirt Face Left-arm Right-arm Left-leg Right-leg Left-shoe Right-shoe
    (0, 1, 1, 4, 1, 2, 2, 2, 5, 3, 2, 2, 3, 1, 4, 4, 5, 5, 6, 6),
    notes={
        "Dress": "a dress has no upper/lower split in CIHP: Upper-body",
        "Glove": "Arms", "Socks": "Legs", "Scarf": "Upper-body", "Torso-skin": "Upper-body",
    },
)

PROFILES: dict[LabelProfile, Profile] = {profile.name: profile for profile in (CIHP, LIP, ATR, SIMPLE)}
