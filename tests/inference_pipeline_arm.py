"""One arm of the InferencePipeline test, run in a fresh process: ``python inference_pipeline_arm.py off|on N``.

Runs ``InferencePipeline.init(model_id=<embedded package>, video_reference=<sample clip>)``
over the first N frames with the post-processing switch off or on and prints one JSON
line: the predictions per frame (``detection_id`` from a counter) and the call counts.
"""

from __future__ import annotations

import itertools
import json
import sys
import uuid

import adapter_helpers as helpers


def main(arm: str, max_frames: int) -> None:
    import roboflow_workflows.core_steps.common.segmentation_entities as entities

    import inference_triton_preproc as itp
    from inference_triton_preproc._assets import sample_video_path
    from inference_triton_preproc.plugin import call_counts
    from inference_triton_preproc.validate.default_model import default_model_path

    if arm == "on":
        assert itp.install(postprocess=True, preprocess=False)
    counter = itertools.count()
    entities.uuid4 = lambda: uuid.UUID(int=next(counter))
    helpers.adapter_module()

    from inference import InferencePipeline

    predictions: dict[int, dict] = {}

    def on_prediction(prediction: dict, frame) -> None:
        if len(predictions) < max_frames:
            predictions[frame.frame_id] = prediction
        if len(predictions) >= max_frames:
            pipeline.terminate()

    pipeline = InferencePipeline.init(
        model_id=str(default_model_path("torch")),
        video_reference=str(sample_video_path()),
        on_prediction=on_prediction,
        confidence=0.05,
    )
    pipeline.start()
    pipeline.join()
    ordered = [predictions[key] for key in sorted(predictions)]
    print(json.dumps({"predictions": ordered, "counts": call_counts()}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
