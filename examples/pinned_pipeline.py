"""InferencePipeline with frames decoded straight into page-locked memory and the plugin on.

    RFDETR_USE_TRITON_PREPROC=1 python examples/pinned_pipeline.py VIDEO MODEL_DIR_OR_ID

The backend is switched on by the environment variable alone (the installed start-up
hook); ``pinned_video_source`` is the one extra argument that lets frames reach the GPU
with a single DMA and no host copy. Needs a CUDA device.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("DISABLE_VERSION_CHECK", "True")

from inference import InferencePipeline  # noqa: E402

from inference_triton_preproc.plugin import call_counts  # noqa: E402
from inference_triton_preproc.runtime import pinned_video_source  # noqa: E402


def main() -> None:
    video, model_id = sys.argv[1], sys.argv[2]

    def on_prediction(predictions: dict, frame) -> None:
        print(frame.frame_id, len(predictions.get("predictions", [])), "detections")

    pipeline = InferencePipeline.init(
        video_reference=pinned_video_source(video),
        model_id=model_id,
        on_prediction=on_prediction,
    )
    pipeline.start()
    pipeline.join()
    print("pre_process calls:", call_counts())


if __name__ == "__main__":
    main()
