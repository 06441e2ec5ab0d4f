"""Flag-off vs flag-on validation: pipeline arms, dumps, comparison, COCO study, reports.

Run ``python -m inference_triton_preproc.validate --help``. Modules: :mod:`.cli`
(command line, the ``video`` command), :mod:`.arm` (one arm in a fresh process),
:mod:`.coco` (COCO study), :mod:`.dumps`, :mod:`.compare`, :mod:`.report`,
:mod:`.default_model` (the embedded random-weight model and sample clip).
"""
