"""What "same output as the reference" means per kernel mode, for every test module.

``pil`` and ``cv2`` are bit-exact; ``torch`` agrees to a few float32 ULP (max |diff|).
"""

TOLERANCE = {"pil": 0.0, "cv2": 0.0, "torch": 2e-6}
