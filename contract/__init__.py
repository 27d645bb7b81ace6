"""The contract between the offline tool (``sinder``) and the service (``service``).

One home for every rule both sides must agree on; it imports numpy, Pillow and pydantic
only (never torch, FastAPI, ``sinder`` or ``service``; a test checks):

- ``layout``: the model repository's folders (model, numeric version, reports) and what
  is a complete version;
- ``triton_config``: writing and reading ``config.pbtxt``;
- ``manifest``: the typed ``manifest.json`` (pydantic), the graph's tensors and their
  meaning, and the JSON Schema generated from it;
- ``defects``: the defect rule (the paper's mask and the high-norm rule), its constants
  and its one standard-deviation convention;
- ``preprocess``: image bytes or files to RGB uint8 pixels at the model's input size;
- ``pictures``: the defect picture both sides draw (``/visualize``, ``sinder analyze``).
"""
