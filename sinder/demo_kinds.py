"""The synthetic demo models by name (torch-free, so that building the CLI parser stays fast).

``planted`` is ``sinder.demo`` (bare ``--demo``), ``entangled`` is ``sinder.demo_entangled``;
each maps to the model name ``sinder build --demo KIND`` gives it in the repository.
"""

DEMO_NAMES = {"planted": "dinov2_demo", "entangled": "dinov2_demo_entangled"}
DEMO_KINDS = tuple(DEMO_NAMES)
