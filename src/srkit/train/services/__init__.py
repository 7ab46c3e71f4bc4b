"""The run's services: everything a training run does around its steps (see ``base.py``).

``SERVICES`` is the registration: the loop builds one of each, in this order, and calls them at
fixed points. A new service is one module with a :class:`Service` subclass plus one line here
(or, for one run, ``Trainer(config, services=[*SERVICES, MyService])``).
"""

from __future__ import annotations

from srkit.train.services.base import Service
from srkit.train.services.checkpoints import Checkpoints
from srkit.train.services.health import Health
from srkit.train.services.pictures import TrainingPictures
from srkit.train.services.scalars import Scalars
from srkit.train.services.validation import Validation

# Order matters where services meet: the progress bar closes (Scalars.stop) before the
# checkpoint of a stopped run is announced; a step's checkpoint follows its validation.
SERVICES: list[type[Service]] = [
    Scalars,
    Health,
    TrainingPictures,
    Validation,
    Checkpoints,
]

__all__ = [
    "SERVICES",
    "Checkpoints",
    "Health",
    "Scalars",
    "Service",
    "TrainingPictures",
    "Validation",
]
