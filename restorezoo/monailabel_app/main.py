"""MONAI Label app serving this project's exported restoration bundles as image-to-image models.

    restorezoo export bundles/pet_lowdose_film_unet --out <app>/model
    monailabel start_server --app <app> --studies /data/studies --conf models pet_lowdose_film_unet

``--conf models a,b``: the bundles in ``<app>/model/`` to serve (default: every exported bundle there). Nothing is
downloaded: a bundle that is not in ``<app>/model/`` is an error, not a model-zoo download, and no SAM2 model is
added. Each export vendors its library under a name unique to its content, so bundles exported from different
versions of the project do not share code in this one process.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import monailabel
from lib.infer import RestorationInferTask
from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

logger = logging.getLogger(__name__)


def served_bundles(app_dir: str, conf: dict[str, str]) -> dict[str, str]:
    """``{name: folder}`` of the bundles to serve: ``--conf models`` names, else every folder of ``<app>/model``
    holding ``configs/metadata.json``. A named bundle that is missing raises ``FileNotFoundError``."""
    model_dir = os.path.join(app_dir, "model")
    names = [m.strip() for m in conf.get("models", "").split(",") if m.strip()]
    if not names:
        names = sorted(
            d for d in os.listdir(model_dir) if os.path.isfile(os.path.join(model_dir, d, "configs", "metadata.json"))
        ) if os.path.isdir(model_dir) else []  # fmt: skip
    missing = [n for n in names if not os.path.isdir(os.path.join(model_dir, n))]
    if missing:
        raise FileNotFoundError(f"{model_dir}: no exported bundle {missing} (restorezoo export ... --out {model_dir})")
    return {n: os.path.join(model_dir, n) for n in names}


class MyApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.models = served_bundles(app_dir, conf)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MONAI restoration zoo",
            description="Image-to-image restoration bundles: low-dose CT / PET denoising, through-plane CT SR",
            version=monailabel.__version__,
        )

    def init_infers(self) -> dict[str, Any]:
        infers = {}
        for name, path in self.models.items():
            task = RestorationInferTask(path, self.conf)
            if task.is_valid():
                infers[name] = task
        logger.info("+++ restoration models: %s", list(infers))
        return infers

    def init_trainers(self) -> dict[str, Any]:
        return {}  # training runs with the bundles' own configs, not through MONAI Label

    def init_strategies(self) -> dict[str, Any]:
        return {"random": Random(), "first": First()}
