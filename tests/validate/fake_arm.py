"""Stand-in for the arm process: speaks the arm protocol and writes synthetic dumps, in well under a second.

Tests swap it in for ``python -m inference_triton_preproc.validate.arm`` (by
monkeypatching ``arm.child_command``) to produce failures that the real model
cannot produce on demand. It takes the real arm's arguments and is steered by
environment variables, which the tests set per arm with ``--a-env``/``--b-env``:

    FAKE_ARM_FRAMES       frames to write (default: --max-frames, else 3)
    FAKE_ARM_KILL_AFTER   after this many frames, write half a line and SIGKILL itself
    FAKE_ARM_SKIP         a frame id to leave out of the dump
    FAKE_ARM_CONF_DELTA   added to every confidence
    FAKE_ARM_SLEEP        seconds to sleep before the first frame

Frames are 768x576 (the sample clip's size) with two box-shaped detections each.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import numpy as np

from inference_triton_preproc.validate.arm import build_parser
from inference_triton_preproc.validate.dumps import DumpWriter, build_metadata, encode_mask

WIDTH, HEIGHT = 768, 576


def _detections(frame_id: int, conf_delta: float) -> list[dict]:
    detections = []
    for k, (x, y) in enumerate(((40 + 8 * frame_id, 60), (400, 300 - 5 * frame_id))):
        mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
        mask[y : y + 80, x : x + 50] = True
        detections.append(
            {
                "class_id": k,
                "class_name": f"random-{k}",
                "confidence": 0.5 + 0.1 * k + conf_delta,
                "xyxy": [float(x), float(y), float(x + 50), float(y + 80)],
                "mask": encode_mask(mask),
            }
        )
    return detections


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def main() -> int:
    args = build_parser().parse_args()
    env = os.environ
    frames = int(env.get("FAKE_ARM_FRAMES", args.max_frames or 3))
    kill_after = int(env["FAKE_ARM_KILL_AFTER"]) if "FAKE_ARM_KILL_AFTER" in env else None
    skip = int(env["FAKE_ARM_SKIP"]) if "FAKE_ARM_SKIP" in env else None
    conf_delta = float(env.get("FAKE_ARM_CONF_DELTA", "0"))
    emit("start", pid=os.getpid())
    time.sleep(float(env.get("FAKE_ARM_SLEEP", "0")))
    emit("model", model_class="Fake", random_weights=True, plugin_installed=args.name == "b")
    meta = build_metadata(
        model={"ref": args.model, "random_weights": True}, arm={"name": args.name, "env": args.arm_env}
    )
    n = 0
    with DumpWriter(args.dump, meta) as writer:
        for frame_id in range(frames):
            if frame_id == skip:
                continue
            if n == kill_after:
                with open(args.dump, "a", encoding="utf-8") as raw:
                    raw.write(f'{{"frame_id": {frame_id}, "width": 7')
                os.kill(os.getpid(), signal.SIGKILL)
            detections = _detections(frame_id, conf_delta)
            writer.write({"frame_id": frame_id, "width": WIDTH, "height": HEIGHT, "detections": detections})
            n += 1
            emit("frame", n=n, frame_id=frame_id, detections=2)
    emit("done", frames=n, elapsed_s=0.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
