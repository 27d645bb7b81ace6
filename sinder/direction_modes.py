"""``--direction``: which singular defect direction the tools use (torch-free, for fast CLI parsers).

See ``sinder.defects.observed`` for the rule behind ``auto``.
"""

DIRECTION_MODES = ("predicted", "observed", "auto")
DEFAULT_DIRECTION = "auto"
DIRECTION_HELP = ("defect direction per layer: 'predicted' (the paper's, from the weights), 'observed' (the "
                  "leading direction of the high-norm tokens on the images) or 'auto' (the prediction when it "
                  "explains the high-norm tokens, the observed direction otherwise); the choice is recorded in "
                  "every report and manifest")


def add_direction_arg(parser) -> None:
    parser.add_argument("--direction", choices=DIRECTION_MODES, default=DEFAULT_DIRECTION, help=DIRECTION_HELP)
