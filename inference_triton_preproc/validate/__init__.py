"""Flag-off vs flag-on validation: pipeline arms, dumps, comparison, COCO study, reports.

Run ``python -m inference_triton_preproc.validate --help``.
"""
