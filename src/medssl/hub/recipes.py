"""Fine-tuning recipes of the seed systems (``recipes.json``: data, readable without torch).

A catalog entry names its recipe (``"recipe": "voco"``); fine-tuning from that backbone then starts from the
recipe's settings: defaults < ``--preset`` (step budget) < recipe < ``--config`` < command-line flags. The
package records which recipe was used, where it comes from and why (``metadata.json`` ``recipe``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict

RECIPES_FILE = Path(__file__).resolve().parent / "recipes.json"


@dataclass(frozen=True)
class Recipe:
    """One seed system's fine-tuning recipe; ``finetune``: settings in the shape of ``FinetuneConfig``."""

    name: str
    title: str
    source: str
    why: str
    finetune: Dict[str, Any]

    def record(self) -> Dict[str, Any]:
        """What a package's metadata keeps of it."""
        return {"name": self.name, "title": self.title, "source": self.source, "why": self.why,
                "settings": self.finetune}


@lru_cache(maxsize=1)
def recipes() -> Dict[str, Recipe]:
    data = json.loads(RECIPES_FILE.read_text())["recipes"]
    return {name: Recipe(name, r["title"], r["source"], r["why"], r["finetune"]) for name, r in data.items()}


def get_recipe(name: str) -> Recipe:
    try:
        return recipes()[name]
    except KeyError:
        raise KeyError(f"unknown fine-tuning recipe {name!r}; known: {', '.join(recipes())}") from None
